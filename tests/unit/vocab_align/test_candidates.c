/* tests/unit/vocab_align/test_candidates.c: candidate set dedupe, nesting, carry-over. */
#include "tests/tap.h"
#include "vocab_align/candidates.h"

int main(void) {
    vcand_set cs, nx;
    vcand_init(&cs);
    vcand_init(&nx);
    is_int(vcand_add(&cs, "a", 1, 0), 0, "a added");
    is_int(vcand_add(&cs, "abc", 3, 0), 1, "abc added");
    is_int(vcand_add(&cs, "ab", 2, 1), 2, "ab added");
    is_int(vcand_add(&cs, "abc", 3, 1), 1, "abc deduped");
    is_int(vcand_add(&cs, "b", 1, 1), 3, "b added");
    is_int(vcand_add(&cs, "abd", 3, -1), 4, "abd added (carried, no proposer)");
    is_int(vcand_add(&cs, "", 0, 0), -1, "empty rejected");
    is_int(cs.n, 5, "five candidates");
    is_int(cs.proposers[1], 3, "abc proposed by members 0 and 1");
    is_int(cs.proposers[4], 0, "abd has no proposer");
    vcand_link(&cs);
    is_int(cs.parent[0], -1, "a has no parent");
    is_int(cs.parent[1], 2, "abc's nearest prefix is ab");
    is_int(cs.parent[2], 0, "ab's nearest prefix is a");
    is_int(cs.parent[3], -1, "b has no parent");
    is_int(cs.parent[4], 2, "abd's nearest prefix is ab");
    is_int(vcand_find(&cs, "ab", 2), 2, "find");
    is_int(vcand_find(&cs, "zz", 2), -1, "find missing");
    is_int(vcand_carry(&cs, "ab", 2, &nx), 2, "two candidates extend 'ab'");
    ok(nx.n == 2 && nx.len[0] == 1 && !memcmp(vcand_str(&nx, 0), "c", 1) && !memcmp(vcand_str(&nx, 1), "d", 1),
       "carried rests are c, d");
    vcand_clear(&cs);
    is_int(cs.n, 0, "clear");
    /* growth past the initial capacity, binary bytes */
    for (int i = 0; i < 300; i++) {
        unsigned char s[3] = {(unsigned char)(i & 255), (unsigned char)(i >> 8), 0xff};
        vcand_add(&cs, s, 3, i % 2);
    }
    is_int(cs.n, 300, "300 distinct binary candidates");
    unsigned char probe[3] = {7, 1, 0xff};
    is_int(vcand_find(&cs, probe, 3), 263, "binary find after growth");
    vcand_free(&cs);
    vcand_free(&nx);
    return tap_done();
}
