/* The send side's per-packet loop: one TUN frame (virtio header + packet)
 * cut into segments by core/offload.plan's rules, each written behind its
 * capsule header in the GSO send buffer and sealed in place; through the
 * TRS with its relay head and MAC as well. The pure-Python reference is
 * PacketHandlingModule.send_frame_sealed: the bytes must be the same
 * (tests/unit/test_fastpath.py). */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "fastpath.h"
#include "relay_tag.h"

#define VNET_HDR_LEN 10
#define CAPSULE_HEADER 13
#define TAG 16
#define CAPSULE 0x30
#define GSO_NONE 0
#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_UDP_L4 5
#define GSO_ECN 0x80
#define TCP 6
#define UDP 17
#define FIN 1
#define PSH 8
#define CWR 128
#define MAX_SUPER 65535
#define MAX_SEGMENTS_PER_FRAME 256

struct plan {
    const unsigned char *packet;
    size_t total;      /* packet length */
    int gso;           /* 0: one segment, the packet as it is */
    size_t l3, header; /* IP header length; IP + L4 header length */
    size_t size;       /* gso_size */
    int tcp, v4;
    uint16_t ip_id;
    uint32_t base_sum; /* IPv4 header sum without length, ID and checksum */
    uint32_t nseg;
};

static inline uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void put_be16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }

static uint32_t ones_sum(const unsigned char *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += be16(p + i);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint32_t)s;
}

/* checksum.fold: two rounds, as the Python one does */
static inline uint32_t fold(uint32_t a, uint32_t b)
{
    uint32_t s = a + b;
    s = (s & 0xffff) + (s >> 16);
    return (s & 0xffff) + (s >> 16);
}

/* offload._l3: 0, or -1 for what the Python raises ParseError on */
static int l3_of(const unsigned char *p, size_t n, size_t *l3, int *proto)
{
    if (n < 20)
        return -1;
    int version = p[0] >> 4;
    if (version == 4) {
        size_t ihl = (size_t)(p[0] & 0x0f) * 4;
        if (ihl < 20 || n < ihl)
            return -1;
        if (be16(p + 6) & 0x3fff)
            return -1;
        *l3 = ihl;
        *proto = p[9];
        return 0;
    }
    if (version == 6 && n >= 40) {
        *l3 = 40;
        *proto = p[6];
        return 0;
    }
    return -1;
}

/* offload.plan + _cut's checks */
static int make_plan(const unsigned char *frame, size_t n, struct plan *pl)
{
    if (n < VNET_HDR_LEN + 20)
        return -1;
    int gso_type = frame[1];
    size_t hdr_len = frame[2] | (size_t)frame[3] << 8;
    size_t gso_size = frame[4] | (size_t)frame[5] << 8;
    const unsigned char *packet = frame + VNET_HDR_LEN;
    size_t total = n - VNET_HDR_LEN;
    int kind = gso_type & ~GSO_ECN;
    memset(pl, 0, sizeof *pl);
    pl->packet = packet;
    pl->total = total;
    if (kind == GSO_NONE) {
        pl->nseg = 1;
        return 0;
    }
    if (hdr_len > total)
        return -1;
    size_t l3;
    int proto;
    if (l3_of(packet, total, &l3, &proto))
        return -1;
    size_t header;
    if ((kind == GSO_TCPV4 || kind == GSO_TCPV6) && proto == TCP && total >= l3 + 20) {
        if ((packet[l3 + 12] >> 4) < 5)
            return -1;
        header = l3 + (size_t)(packet[l3 + 12] >> 4) * 4;
        pl->tcp = 1;
    } else if (kind == GSO_UDP_L4 && proto == UDP) {
        header = l3 + 8;
    } else {
        return -1;
    }
    if (gso_size == 0 || header >= total || gso_size > MAX_SUPER)
        return -1;
    if ((total - header) / gso_size > MAX_SEGMENTS_PER_FRAME)
        return -1;
    pl->gso = 1;
    pl->l3 = l3;
    pl->header = header;
    pl->size = gso_size;
    pl->v4 = packet[0] >> 4 == 4;
    pl->nseg = (uint32_t)((total - header + gso_size - 1) / gso_size);
    if (pl->v4) {
        pl->ip_id = be16(packet + 4);
        unsigned char base[60];
        memcpy(base, packet, l3);
        memset(base + 2, 0, 4);
        memset(base + 10, 0, 2);
        pl->base_sum = ones_sum(base, l3);
    }
    return 0;
}

int fp_check_frame(const unsigned char *frame, size_t n)
{
    struct plan pl;
    return make_plan(frame, n, &pl) ? FP_E_FRAME : FP_DONE;
}

/* segment i's header (offload._cut + _tcp_fix / _udp_fix) into h */
static void segment_header(const struct plan *pl, uint32_t i, size_t start, size_t end, unsigned char *h)
{
    const unsigned char *packet = pl->packet;
    size_t l3 = pl->l3, header = pl->header;
    size_t length = header + end - start;
    memcpy(h, packet, header);
    if (pl->v4) {
        uint16_t id = (uint16_t)(pl->ip_id + i);
        put_be16(h + 2, (uint16_t)length);
        put_be16(h + 4, id);
        put_be16(h + 10, (uint16_t)(~fold(fold(pl->base_sum, (uint32_t)length), id) & 0xffff));
    } else {
        put_be16(h + 4, (uint16_t)(length - 40));
    }
    if (pl->tcp) {
        uint32_t seq = (uint32_t)h[l3 + 4] << 24 | (uint32_t)h[l3 + 5] << 16 | (uint32_t)h[l3 + 6] << 8 | h[l3 + 7];
        seq += (uint32_t)(start - header);
        h[l3 + 4] = seq >> 24;
        h[l3 + 5] = seq >> 16;
        h[l3 + 6] = seq >> 8;
        h[l3 + 7] = seq;
        unsigned char flags = h[l3 + 13];
        if (i + 1 != pl->nseg)
            flags &= ~(FIN | PSH);
        if (i)
            flags &= ~CWR;
        h[l3 + 13] = flags;
    } else {
        put_be16(h + l3 + 4, (uint16_t)(length - l3));
    }
}

int fp_seal_frame(struct fp_sender *s, struct fp_run *run, unsigned char *out,
                  const unsigned char *frame, size_t n, uint32_t *resume)
{
    struct plan pl;
    if (make_plan(frame, n, &pl))
        return FP_E_FRAME;
    size_t pre = s->pre, post = pre ? TAG : 0;
    for (uint32_t i = *resume; i < pl.nseg; i++) {
        size_t start, end, hl;
        if (pl.gso) {
            start = pl.header + (size_t)i * pl.size;
            end = start + pl.size < pl.total ? start + pl.size : pl.total;
            hl = pl.header;
        } else {
            start = 0;
            end = pl.total;
            hl = 0;
        }
        size_t plain = hl + end - start;
        size_t length = pre + CAPSULE_HEADER + TAG + plain + post;
        if (length > run->max_bytes) {
            *resume = i;
            return FP_E_TOO_LARGE;
        }
        size_t pos = run->length;
        /* GSO: every datagram of a run has the first one's size but the last */
        if (pos && (length > run->size || run->short_ || pos + length > run->max_bytes ||
                    run->count == run->max_segments)) {
            *resume = i;
            return FP_FLUSH;
        }
        if (s->counter >= s->limit) {
            *resume = i;
            return FP_E_COUNTER;
        }
        unsigned char *capsule = out + pos + pre;
        uint64_t c = s->counter++;
        capsule[0] = CAPSULE;
        for (int k = 0; k < 4; k++)
            capsule[1 + k] = (unsigned char)(s->remote_index >> (8 * k));
        for (int k = 0; k < 8; k++)
            capsule[5 + k] = (unsigned char)(c >> (8 * k));
        unsigned char *body = capsule + CAPSULE_HEADER;
        if (hl)
            segment_header(&pl, i, start, end, body);
        memcpy(body + hl, pl.packet + start, end - start);
        unsigned char nonce[12] = {0};
        memcpy(nonce + 4, capsule + 5, 8);
        s->encrypt(body, NULL, body, plain, capsule, CAPSULE_HEADER, NULL, nonce, s->key);
        if (pre) {
            memcpy(out + pos, s->relay_head, pre);
            size_t covered = pre + CAPSULE_HEADER + TAG + plain;
            fp_relay_tag(s->mac, s->mac_key, s->mac_key_len, out + pos, covered, out + pos + covered);
        }
        if (!pos)
            run->size = (uint32_t)length;
        else if (length < run->size)
            run->short_ = 1;
        run->length = (uint32_t)(pos + length);
        run->count++;
        run->inner += plain;
    }
    *resume = 0;
    return FP_DONE;
}
