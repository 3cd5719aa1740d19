/* The replay window of core/replay.py as a ring of 2048 bits: the same
 * answers (tests/unit/test_fastpath.py drives both with one sequence),
 * without a big integer shifted on every packet. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "fastpath.h"

#define WINDOW 2048u

int fp_replay_check(const struct fp_replay *w, uint64_t counter, uint64_t limit)
{
    if (!w->seen || counter > w->highest)
        return counter < limit;
    uint64_t offset = w->highest - counter;
    if (offset >= WINDOW)
        return 0;
    unsigned bit = counter % WINDOW;
    return !((w->bits[bit / 64] >> (bit % 64)) & 1);
}

int fp_replay_update(struct fp_replay *w, uint64_t counter)
{
    unsigned bit = counter % WINDOW;
    if (!w->seen || counter > w->highest) {
        /* the counters skipped over leave the window unseen */
        uint64_t shift = w->seen ? counter - w->highest : WINDOW;
        if (shift >= WINDOW) {
            memset(w->bits, 0, sizeof w->bits);
        } else {
            for (uint64_t c = w->highest + 1; c != counter; c++) {
                unsigned b = c % WINDOW;
                w->bits[b / 64] &= ~(1ull << (b % 64));
            }
        }
        w->bits[bit / 64] |= 1ull << (bit % 64);
        w->highest = counter;
        w->seen = 1;
        return 1;
    }
    /* only after a check passed; a counter outside the window would land
     * on a live one's bit */
    if (w->highest - counter < WINDOW)
        w->bits[bit / 64] |= 1ull << (bit % 64);
    return 0;
}
