/* The receive side's per-packet loop: a run of one GRO batch's datagrams
 * for one tunnel, opened where they lie: replay window, AEAD, the inner
 * source check, then into the coalescer (or, without one, noted for the
 * caller). The pure-Python reference is PacketHandlingModule.receive_at
 * and RelayedFrames.receive_relayed_at: same decisions, same drops
 * (tests/unit/test_fastpath.py). Anything this loop does not take (other
 * types, other indices or sessions, short datagrams) ends the run and is
 * left to the Python path. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "fastpath.h"
#include "relay_tag.h"

#define CAPSULE_HEADER 13
#define TAG 16
#define OVERHEAD (CAPSULE_HEADER + TAG)
#define CAPSULE 0x30
#define RELAYED 0x42
#define RELAYED_HEADER 6
#define FROM_RESPONDER 0x01
#define SEALED 0x80

static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* xorshift64*: the test loss hook's coin, not a secret */
static inline uint32_t coin(struct fp_receiver *r)
{
    uint64_t x = r->rng ? r->rng : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return (uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32);
}

static inline int tags_differ(const unsigned char *a, const unsigned char *b)
{
    unsigned char d = 0;
    for (int i = 0; i < TAG; i++)
        d |= a[i] ^ b[i];
    return d != 0;
}

size_t fp_open_run(struct fp_receiver *r, struct fp_coalescer *co, unsigned char *buf,
                   size_t pos, size_t n, size_t size)
{
    /* what this run did: counted from zero, read by the caller afterwards */
    r->rx_packets = 0;
    r->rx_bytes = 0;
    r->newest = 0;
    r->drop_unauthenticated = r->drop_replayed = r->drop_limit = r->drop_spoofed = r->drop_mac = r->drop_loss = 0;
    r->write_failed = 0;
    r->spans_used = 0;
    while (pos < n) {
        size_t end = n - pos > size ? pos + size : n;
        unsigned char *d = buf + pos;
        size_t len = end - pos;
        unsigned char *capsule;
        size_t clen;
        if (r->relayed) {
            if (len < RELAYED_HEADER + OVERHEAD + TAG || d[0] != RELAYED || be32(d + 1) != r->session ||
                (d[5] & SEALED) || (d[5] & FROM_RESPONDER) == r->own_flags || d[RELAYED_HEADER] != CAPSULE ||
                le32(d + RELAYED_HEADER + 1) != r->local_index)
                break;
            unsigned char tag[TAG];
            fp_relay_tag(r->mac, r->mac_key, r->mac_key_len, d, len - TAG, tag);
            if (tags_differ(tag, d + len - TAG)) {
                r->drop_mac++;
                pos = end;
                continue;
            }
            capsule = d + RELAYED_HEADER;
            clen = len - RELAYED_HEADER - TAG;
        } else {
            if (len < OVERHEAD || d[0] != CAPSULE || le32(d + 1) != r->local_index)
                break;
            capsule = d;
            clen = len;
        }
        pos = end;
        if (r->loss && coin(r) < r->loss) {
            r->drop_loss++;
            continue;
        }
        uint64_t counter = le64(capsule + 5);
        if (!fp_replay_check(r->replay, counter, r->limit)) {
            if (counter >= r->limit)
                r->drop_limit++;
            else
                r->drop_replayed++;
            continue;
        }
        unsigned char nonce[12] = {0};
        memcpy(nonce + 4, capsule + 5, 8);
        unsigned char *body = capsule + CAPSULE_HEADER;
        if (r->decrypt(body, NULL, NULL, body, clen - CAPSULE_HEADER, capsule, CAPSULE_HEADER, nonce, r->key)) {
            r->drop_unauthenticated++;
            continue;
        }
        if (fp_replay_update(r->replay, counter))
            r->newest = 1;
        r->rx_packets++;
        size_t plain = clen - OVERHEAD;
        if (r->vip4) {
            /* a peer may only speak from its own virtual IP */
            int version = plain ? body[0] >> 4 : 0;
            if (!((version == 4 && plain >= 20 && !memcmp(body + 12, r->vip4, 4)) ||
                  (version == 6 && plain >= 40 && !memcmp(body + 8, r->vip6, 16)))) {
                r->drop_spoofed++;
                continue;
            }
        }
        r->rx_bytes += plain;
        if (co) {
            r->write_failed += fp_coalescer_add(co, body, plain, r->tunnel_key);
        } else {
            r->spans[2 * r->spans_used] = (uint32_t)(body - buf);
            r->spans[2 * r->spans_used + 1] = (uint32_t)plain;
            if (++r->spans_used == r->spans_max)
                break;
        }
    }
    return pos;
}
