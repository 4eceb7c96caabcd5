// consort's OpenAI-compatible server driven by the official `openai` npm SDK.
// Run by tests/integration/openai_sdk.t (which starts workers and the server):
//   CONSORT_URL=http://127.0.0.1:PORT/v1  the server
//   CONSORT_MODEL=consort                 the ensemble's model id
//   CONSORT_FAULT_PIDS=pid_a,pid_b        optional: worker pids of the two members,
//                                         in member order; enables the fault tests
//                                         (which kill them: run those last)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.CONSORT_URL;
const model = process.env.CONSORT_MODEL || 'consort';
const faultPids = (process.env.CONSORT_FAULT_PIDS || '').split(',').filter(Boolean).map(Number);
assert.ok(baseURL, 'CONSORT_URL must be set');

const client = new OpenAI({ baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 120_000 });
const prompt = 'The committee said that the new school';
const messages = [{ role: 'user', content: 'Tell me a story about a cat.' }];
const MAX = 24;

function checkUsage(u, max) {
  assert.ok(u, 'usage present');
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) assert.equal(typeof u[k], 'number', k);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  assert.ok(u.prompt_tokens > 0);
  assert.ok(u.completion_tokens >= 0 && u.completion_tokens <= max);
}

let members = [];

test('GET /v1/models lists the ensemble and each member', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.equal(ids[0], model);
  assert.ok(ids.length >= 2, `members listed: ${ids}`);
  for (const m of list.data) assert.equal(m.object, 'model');
  members = ids.slice(1);
});

let plainText;
test('completions: greedy, not streamed', async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: MAX, temperature: 0 });
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.created, 'number');
  assert.equal(r.model, model);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(typeof c.text, 'string');
  assert.ok(c.text.length > 0, 'some text');
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  assert.equal(c.logprobs, null);
  checkUsage(r.usage, MAX);
  assert.ok(Array.isArray(r.ensemble.members), 'ensemble extension present');
  plainText = c.text;
});

test('completions: the streamed text equals the non-streamed text (greedy)', async () => {
  const stream = await client.completions.create({ model, prompt, max_tokens: MAX, temperature: 0, stream: true });
  let text = '';
  let last;
  let n = 0;
  let id;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    id ??= chunk.id;
    assert.equal(chunk.id, id, 'one id for all chunks');
    text += chunk.choices[0].text;
    last = chunk;
    n++;
  }
  assert.ok(n >= 2, 'several chunks');
  assert.ok(['stop', 'length'].includes(last.choices[0].finish_reason));
  assert.equal(text, plainText);
});

test('completions with a stop sequence: streamed = not streamed, stop text excluded', async () => {
  const body = { model, prompt, max_tokens: MAX, temperature: 0, stop: ['.', '\n'] };
  const r = await client.completions.create(body);
  assert.ok(!r.choices[0].text.includes('.') && !r.choices[0].text.includes('\n'));
  const stream = await client.completions.create({ ...body, stream: true });
  let t = '';
  for await (const c of stream) t += c.choices[0].text;
  assert.equal(t, r.choices[0].text);
});

let chatText;
let chatUsage;
test('chat: greedy, not streamed', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: MAX, temperature: 0 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  checkUsage(r.usage, MAX);
  chatText = c.message.content;
  chatUsage = r.usage;
});

test('chat: stream with include_usage equals the non-streamed answer', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: MAX, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3);
  assert.equal(chunks[0].object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the first chunk carries the role');
  const usageChunk = chunks.at(-1);
  assert.deepEqual(usageChunk.choices, [], 'the usage chunk has no choices');
  checkUsage(usageChunk.usage, MAX);
  assert.deepEqual(usageChunk.usage, chatUsage);
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null, 'usage: null before the last chunk');
  const fin = chunks.at(-2).choices[0];
  assert.ok(['stop', 'length'].includes(fin.finish_reason));
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, chatText);
});

test('chat: logprobs with top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const lp = r.choices[0].logprobs;
  assert.ok(Array.isArray(lp.content) && lp.content.length > 0);
  for (const e of lp.content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.ok(Array.isArray(e.bytes));
    assert.ok(e.top_logprobs.length <= 2);
  }
  const bytes = Buffer.from(lp.content.flatMap((e) => e.bytes));
  assert.equal(bytes.toString('utf8'), r.choices[0].message.content, 'the bytes make up the content');
});

test('completions: legacy logprobs', async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  assert.equal(lp.token_logprobs.length, lp.tokens.length);
  assert.equal(lp.top_logprobs.length, lp.tokens.length);
  assert.equal(lp.text_offset[0], prompt.length);
});

test('the ensemble extension: one member alone, by model id and by strategy', async () => {
  const a = await client.completions.create({ model: members[0], prompt, max_tokens: 8, temperature: 0 });
  assert.equal(a.model, members[0]);
  const b = await client.completions.create({
    model, prompt, max_tokens: 8, temperature: 0, ensemble: { strategy: `solo:${members[0]}` },
  });
  assert.equal(b.choices[0].text, a.choices[0].text, 'model=member is solo:member');
});

test('every strategy through the ensemble extension; weights (1, 0) is member 0 alone', async () => {
  for (const strategy of ['mixture', 'product', 'min_ppl', 'min_ppl_cross', 'selective', `solo:${members[1]}`]) {
    const r = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, ensemble: { strategy } });
    assert.equal(r.ensemble.strategy, strategy);
    assert.equal(typeof r.choices[0].text, 'string', strategy);
  }
  const solo = await client.completions.create({ model: members[0], prompt, max_tokens: 12, temperature: 0 });
  const w10 = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, ensemble: { strategy: 'mixture', weights: [1, 0] },
  });
  assert.equal(w10.choices[0].text, solo.choices[0].text, 'invariant 3 (weights (1, 0) give member 0) through the API');
  const auto = await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0, ensemble: { weights: 'auto' } });
  const ws = auto.ensemble.members.map((m) => m.weight);
  assert.ok(Math.abs(ws.reduce((a, b) => a + b, 0) - 1) < 1e-6, `auto weights sum to 1: ${ws}`);
});

async function expect400(body, param, endpoint = 'completions') {
  const fn = endpoint === 'chat' ? client.chat.completions : client.completions;
  await assert.rejects(fn.create(body), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `BadRequestError, got ${e}`);
    assert.equal(e.status, 400);
    assert.equal(e.error?.type, 'invalid_request_error');
    assert.equal(typeof e.error?.message, 'string');
    if (param) assert.equal(e.error.param, param);
    return true;
  });
}

test('bad requests get 400 with an OpenAI error object', async () => {
  await expect400({ model, prompt, n: 2 }, 'n');
  await expect400({ model, prompt, echo: true }, 'echo');
  await expect400({ model, prompt, max_tokens: -1 }, 'max_tokens');
  await expect400({ model, prompt, max_tokens: 'ten' }, 'max_tokens');
  await expect400({ model, prompt, best_of: 2 }, 'best_of');
  await expect400({ model, prompt, ensemble: { strategy: 'vote' } }, 'ensemble.strategy');
  await expect400({ model, prompt, ensemble: { members: ['nobody'] } }, 'ensemble.members');
  await expect400({ model, messages, n: 3 }, 'n', 'chat');
  await expect400({ model, messages, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 'tools', 'chat');
  await expect400({ model, messages: 'hello' }, 'messages', 'chat');
  // malformed JSON: the SDK cannot send it, so plain fetch
  const r = await fetch(`${baseURL}/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model": "x", "prompt": ',
  });
  assert.equal(r.status, 400);
  const j = await r.json();
  assert.equal(j.error.type, 'invalid_request_error');
});

test('concurrent requests each get their own sessions (same greedy text)', async () => {
  const runs = await Promise.all([0, 1, 2].map(async (k) => {
    if (k === 1) {
      const stream = await client.completions.create({ model, prompt, max_tokens: MAX, temperature: 0, stream: true });
      let t = '';
      for await (const c of stream) t += c.choices[0]?.text ?? '';
      return t;
    }
    const r = await client.completions.create({ model, prompt, max_tokens: MAX, temperature: 0 });
    return r.choices[0].text;
  }));
  for (const t of runs) assert.equal(t, plainText);
});

test('a client that aborts mid-stream does not hurt the server', async () => {
  const stream = await client.completions.create({ model, prompt, max_tokens: 300, temperature: 0, stream: true });
  let n = 0;
  for await (const _ of stream) if (++n === 2) break; // the SDK aborts the HTTP request
  assert.equal(n, 2);
  const root = baseURL.replace(/\/v1\/?$/, '');
  let disconnects = 0;
  for (let i = 0; i < 50 && disconnects < 1; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const m = await (await fetch(`${root}/metrics`)).text();
    disconnects = Number(/consort_stream_disconnects_total (\d+)/.exec(m)?.[1] ?? 0);
  }
  // a stream that ends before the server notices counts as done, not aborted
  if (disconnects < 1) console.log('# the aborted stream finished before the server noticed');
  const r = await client.completions.create({ model, prompt, max_tokens: MAX, temperature: 0 });
  assert.equal(r.choices[0].text, plainText, 'the next request is unaffected');
  const m = await (await fetch(`${root}/metrics`)).text();
  assert.match(m, /consort_requests_in_flight 0/);
});

test('health and metrics', async () => {
  const root = baseURL.replace(/\/v1\/?$/, '');
  const h = await fetch(`${root}/health`);
  assert.equal(h.status, 200);
  const m = await (await fetch(`${root}/metrics`)).text();
  assert.match(m, /consort_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+/);
  assert.match(m, /consort_requests_total\{endpoint="\/v1\/completions",status="400"\} \d+/);
  assert.match(m, /consort_steps_total \d+/);
});

test('FAULT: a member killed mid-stream; the other finishes; the loss is reported', { skip: faultPids.length < 2 }, async () => {
  const stream = await client.completions.create({
    model, prompt, max_tokens: 200, temperature: 0, stream: true, ensemble: { strategy: 'mixture' },
  });
  let text = '';
  let n = 0;
  let last;
  for await (const chunk of stream) {
    if (chunk.choices.length) text += chunk.choices[0].text;
    last = chunk;
    if (++n === 1) process.kill(faultPids[1], 'SIGKILL'); // as early as possible: ~70 steps take ~0.4 s
  }
  console.log(`${n} chunks; member ${members[1]} killed after the first`);
  assert.ok(n > 2, 'the stream went on after the kill');
  assert.ok(['stop', 'length'].includes(last.choices[0].finish_reason));
  const lost = last.ensemble.members.find((m) => m.name === members[1]);
  assert.equal(lost.failed, true, 'the killed member is reported as failed');
  assert.equal(typeof lost.failure, 'string');
  assert.ok(last.ensemble.failures >= 1);
  assert.ok(text.length > 0);
  // the survivor still answers alone
  const r = await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0 });
  assert.equal(r.choices.length, 1);
});

test('FAULT: all members down → 503', { skip: faultPids.length < 2 }, async () => {
  process.kill(faultPids[0], 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  const root = baseURL.replace(/\/v1\/?$/, '');
  // health may need one failed probe to notice; the generation request below does that
  await assert.rejects(client.completions.create({ model, prompt, max_tokens: 4 }), (e) => {
    assert.equal(e.status, 503, `status ${e.status}: ${e.message}`);
    return true;
  });
  const h = await fetch(`${root}/health`);
  assert.equal(h.status, 503);
  await assert.rejects(client.chat.completions.create({ model, messages, max_tokens: 4, stream: true }), (e) => {
    assert.equal(e.status, 503);
    return true;
  });
});
