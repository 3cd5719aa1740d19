/* The TRS's per-frame loop: consecutive data frames of one session side
 * (the same relay head as the first) whose relay MAC checks out, so the
 * caller forwards them unchanged in one GSO send. The reference is
 * RelayService.forward_at, frame by frame, and crypto.relay_mac_run
 * (tests/unit/test_fastpath.py). */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "fastpath.h"
#include "relay_tag.h"

#define RELAYED_HEADER 6
#define TAG 16

size_t fp_relay_run(const unsigned char *buf, size_t pos, size_t n, size_t size, const unsigned char *head,
                    const unsigned char *key, size_t keylen, fp_mac_fn mac)
{
    unsigned char tag[TAG];
    while (pos < n) {
        size_t len = n - pos > size ? size : n - pos;
        const unsigned char *d = buf + pos;
        if (len < RELAYED_HEADER + TAG || memcmp(d, head, RELAYED_HEADER))
            break;
        fp_relay_tag(mac, key, keylen, d, len - TAG, tag);
        unsigned char diff = 0;
        for (int i = 0; i < TAG; i++)
            diff |= tag[i] ^ d[len - TAG + i];
        if (diff)
            break;
        pos += len;
    }
    return pos;
}
