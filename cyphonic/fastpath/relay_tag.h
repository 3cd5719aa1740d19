/* A data frame's relay MAC (crypto.relay_mac_input): keyed BLAKE2b over the
 * relay head and capsule header (19 bytes), the inner datagram's last 16
 * bytes and the covered length, or over all of a frame too short for that.
 * `frame`/`n`: the frame without its tag. Shared by seal.c, open.c, relay.c. */
#ifndef FP_RELAY_TAG_H
#define FP_RELAY_TAG_H

#include <string.h>

#define FP_RELAY_MAC_HEAD 19
#define FP_RELAY_TAG 16

static inline void fp_relay_tag(fp_mac_fn mac, const unsigned char *key, size_t keylen, const unsigned char *frame,
                                size_t n, unsigned char *tag)
{
    if (n < FP_RELAY_MAC_HEAD + FP_RELAY_TAG) {
        mac(tag, FP_RELAY_TAG, frame, n, key, keylen, NULL, NULL);
        return;
    }
    unsigned char in[FP_RELAY_MAC_HEAD + FP_RELAY_TAG + 2];
    memcpy(in, frame, FP_RELAY_MAC_HEAD);
    memcpy(in + FP_RELAY_MAC_HEAD, frame + n - FP_RELAY_TAG, FP_RELAY_TAG);
    in[FP_RELAY_MAC_HEAD + FP_RELAY_TAG] = (unsigned char)(n >> 8);
    in[FP_RELAY_MAC_HEAD + FP_RELAY_TAG + 1] = (unsigned char)n;
    mac(tag, FP_RELAY_TAG, in, sizeof in, key, keylen, NULL, NULL);
}

#endif
