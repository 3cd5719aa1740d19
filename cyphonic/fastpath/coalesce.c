/* The receive side's TCP coalescer: consecutive in-order segments of one
 * flow of one tunnel become one GSO write to the TUN (virtio_net_hdr + IP
 * packet), everything else one frame with its checksum left partial.
 *
 * cyphonic/core/offload.py's Coalescer (with single_frame and _partial) is
 * the reference: for any sequence of add/flush calls this writes the same
 * frames, byte for byte and in the same order. Change both or neither.
 *
 * Every frame is built contiguously so that it goes out in one write():
 * a held flow keeps its head and payloads back to back in one buffer, with
 * room for the virtio header in front of them. */

#include <stdint.h>
#include <stddef.h>
#include "fastpath.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VNET_LEN 10
#define MAX_SUPER 65535
#define MAX_FLOWS 64
#define TCP 6
#define UDP 17
#define FIN 1
#define SYN 2
#define RST 4
#define PSH 8
#define URG 32
#define ECE 64
#define CWR 128
#define NO_MERGE (SYN | RST | URG | CWR | ECE | FIN)
#define F_NEEDS_CSUM 1
#define GSO_NONE 0
#define GSO_TCPV4 1
#define GSO_TCPV6 4

struct flow {
    uint64_t tunnel;
    unsigned char *buf;     /* virtio header room, then the IP packet being built */
    size_t cap;             /* bytes of packet buf holds after the header room */
    uint32_t next_seq;
    unsigned l3, header, size, length, last, count;
    int closed;
};

struct fp_coalescer {
    int fd;
    int failed;             /* failed writes in the current add/flush */
    int err;
    unsigned nflows;
    /* held flows in insertion order (the Python dict's order): flows[0] is
     * the oldest; the structs past nflows are free, their buffers kept */
    struct flow *flows[MAX_FLOWS];
    struct flow pool[MAX_FLOWS];
    unsigned char *scratch; /* a frame that is not held */
    size_t scratch_cap;
};

static inline unsigned be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* RFC 1071 with end-around carry: 0 only for all-zero input, else in
 * 1..0xFFFF congruent mod 0xFFFF, as checksum.ones_sum reports it */
static inline unsigned fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (unsigned)s;
}

static uint64_t sum_words(const unsigned char *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += be16(p + i);
    return s;
}

static unsigned pseudo_sum(const unsigned char *packet, uint32_t l4_length, unsigned proto)
{
    uint64_t s = (packet[0] >> 4 == 4) ? sum_words(packet + 12, 8) : sum_words(packet + 8, 32);
    s += (l4_length >> 16) + (l4_length & 0xFFFF) + proto;
    return fold(s);
}

static void vnet(unsigned char *h, unsigned flags, unsigned gso_type, unsigned hdr_len, unsigned gso_size,
                 unsigned csum_start, unsigned csum_offset)
{
    /* <BBHHHH: TUNSETVNETLE is never set and our hosts are little-endian */
    h[0] = (unsigned char)flags;
    h[1] = (unsigned char)gso_type;
    h[2] = (unsigned char)hdr_len;
    h[3] = (unsigned char)(hdr_len >> 8);
    h[4] = (unsigned char)gso_size;
    h[5] = (unsigned char)(gso_size >> 8);
    h[6] = (unsigned char)csum_start;
    h[7] = (unsigned char)(csum_start >> 8);
    h[8] = (unsigned char)csum_offset;
    h[9] = (unsigned char)(csum_offset >> 8);
}

static void out(struct fp_coalescer *co, const unsigned char *frame, size_t n)
{
    if (write(co->fd, frame, n) < 0) {
        co->failed++;
        co->err = errno;
    }
}

static int grow(unsigned char **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    unsigned char *b = realloc(*buf, VNET_LEN + n);
    if (b == NULL)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

/* single_frame(): the frame at f (room for the virtio header, then the n
 * bytes of packet) finished in place. _l3's refusals and anything but a
 * long enough TCP/UDP packet go out with the plain header. */
static void single_in_place(struct fp_coalescer *co, unsigned char *f, size_t n)
{
    unsigned char *p = f + VNET_LEN;
    unsigned l3 = 0, proto = 0;
    if (n >= 20) {
        unsigned version = p[0] >> 4;
        if (version == 4) {
            l3 = (p[0] & 0x0F) * 4u;
            if (l3 < 20 || n < l3 || (be16(p + 6) & 0x3FFF))
                l3 = 0;
            else
                proto = p[9];
        } else if (version == 6 && n >= 40) {
            l3 = 40;
            proto = p[6];
        }
    }
    unsigned offset = proto == TCP ? 16 : proto == UDP ? 6 : 0;
    if (l3 == 0 || offset == 0 || n < l3 + (proto == TCP ? 20u : 8u)) {
        vnet(f, 0, GSO_NONE, 0, 0, 0, 0);
    } else {
        put16(p + l3 + offset, pseudo_sum(p, (uint32_t)(n - l3), proto));
        vnet(f, F_NEEDS_CSUM, GSO_NONE, 0, 0, l3, offset);
    }
    out(co, f, VNET_LEN + n);
}

/* a frame of a packet we do not hold: copied, since its checksum field
 * changes and the frame must be contiguous (out of memory: a failed write) */
static void single(struct fp_coalescer *co, const unsigned char *packet, size_t n, int plain)
{
    if (grow(&co->scratch, &co->scratch_cap, n) < 0) {
        co->failed++;
        co->err = ENOMEM;
        return;
    }
    if (n)
        memcpy(co->scratch + VNET_LEN, packet, n);
    if (plain) {
        vnet(co->scratch, 0, GSO_NONE, 0, 0, 0, 0);
        out(co, co->scratch, VNET_LEN + n);
    } else {
        single_in_place(co, co->scratch, n);
    }
}

static void emit(struct fp_coalescer *co, struct flow *fl)
{
    unsigned char *h = fl->buf + VNET_LEN;
    unsigned l3 = fl->l3;
    if (fl->count == 1) {
        single_in_place(co, fl->buf, fl->length);
        return;
    }
    int v4 = h[0] >> 4 == 4;
    if (v4) {
        put16(h + 2, fl->length);
        put16(h + 10, 0);
        put16(h + 10, ~fold(sum_words(h, l3)) & 0xFFFF);
    } else {
        put16(h + 4, fl->length - 40);
    }
    put16(h + l3 + 16, pseudo_sum(h, fl->length - l3, TCP));
    vnet(fl->buf, F_NEEDS_CSUM, v4 ? GSO_TCPV4 : GSO_TCPV6, fl->header, fl->size, l3, 16);
    out(co, fl->buf, VNET_LEN + fl->length);
}

/* emit flows[i] and drop it; its struct (and buffer) goes to the free end */
static void emit_remove(struct fp_coalescer *co, unsigned i)
{
    struct flow *fl = co->flows[i];
    emit(co, fl);
    memmove(&co->flows[i], &co->flows[i + 1], (co->nflows - 1 - i) * sizeof co->flows[0]);
    co->flows[--co->nflows] = fl;
}

struct fp_coalescer *fp_coalescer_new(int fd)
{
    struct fp_coalescer *co = calloc(1, sizeof *co);
    if (co == NULL)
        return NULL;
    co->fd = fd;
    for (unsigned i = 0; i < MAX_FLOWS; i++)
        co->flows[i] = &co->pool[i];
    if (grow(&co->scratch, &co->scratch_cap, MAX_SUPER) < 0) {
        free(co);
        return NULL;
    }
    return co;
}

void fp_coalescer_free(struct fp_coalescer *co)
{
    if (co == NULL)
        return;
    for (unsigned i = 0; i < MAX_FLOWS; i++)
        free(co->pool[i].buf);
    free(co->scratch);
    free(co);
}

int fp_coalescer_errno(const struct fp_coalescer *co)
{
    return co->err;
}

int fp_coalescer_flush(struct fp_coalescer *co)
{
    co->failed = 0;
    for (unsigned i = 0; i < co->nflows; i++)
        emit(co, co->flows[i]);
    co->nflows = 0;
    return co->failed;
}

int fp_coalescer_add(struct fp_coalescer *co, const unsigned char *p, size_t n, uint64_t tunnel)
{
    unsigned l3, keyoff, keylen;
    co->failed = 0;
    /* Coalescer.add's tests: IPv4 without options or fragmentation, or IPv6
     * whose next header is TCP; the key is addresses + ports */
    if (n >= 40 && p[0] == 0x45 && p[9] == TCP && !((p[6] & 0x3F) | p[7])) {
        l3 = 20, keyoff = 12, keylen = 12;
    } else if (n >= 60 && p[0] >> 4 == 6 && p[6] == TCP) {
        l3 = 40, keyoff = 8, keylen = 36;
    } else {
        single(co, p, n, 0);
        return co->failed;
    }
    const unsigned char *t = p + l3;
    uint32_t seq = be32(t + 4);
    unsigned flags = t[13];
    size_t header = l3 + (t[12] >> 4) * 4u;

    unsigned i;
    struct flow *fl = NULL;
    for (i = 0; i < co->nflows; i++) {
        struct flow *c = co->flows[i];
        /* l3 tells the key's length: a v4 and a v6 key never match */
        if (c->tunnel == tunnel && c->l3 == l3 && !memcmp(c->buf + VNET_LEN + keyoff, p + keyoff, keylen)) {
            fl = c;
            break;
        }
    }
    if (header < l3 + 20 || header > n) {
        if (fl != NULL)
            emit_remove(co, i);
        single(co, p, n, 1);
        return co->failed;
    }
    size_t payload = n - header;
    int mergeable = payload > 0 && !(flags & NO_MERGE);
    if (fl != NULL) {
        const unsigned char *h = fl->buf + VNET_LEN;
        /* GRO's rules, as the Python match tuple: ack, window, header length,
         * TOS + TTL (v4) or version/class/label + hop limit (v6), options.
         * Compared against the held head itself: it is the first packet's,
         * and a merge only ever changes its PSH bit, which is not compared. */
        if (mergeable && !fl->closed && seq == fl->next_seq && header == fl->header && payload <= fl->size &&
            fl->last == fl->size && fl->length + payload <= MAX_SUPER && !memcmp(h + l3 + 8, t + 8, 4) &&
            !memcmp(h + l3 + 14, t + 14, 2) &&
            (l3 == 20 ? h[1] == p[1] && h[8] == p[8] : !memcmp(h, p, 4) && h[7] == p[7]) &&
            !memcmp(h + l3 + 20, t + 20, header - l3 - 20)) {
            memcpy(fl->buf + VNET_LEN + fl->length, p + header, payload);
            fl->length += (unsigned)payload;
            fl->last = (unsigned)payload;
            fl->count++;
            fl->next_seq = seq + (uint32_t)payload;
            if (flags & PSH) {
                fl->closed = 1;
                fl->buf[VNET_LEN + l3 + 13] |= PSH;
            }
            return co->failed;
        }
        emit_remove(co, i);
    }
    if (!mergeable) {
        single(co, p, n, 0);
        return co->failed;
    }
    /* a bounded number of held flows: the oldest makes room */
    if (co->nflows >= MAX_FLOWS)
        emit_remove(co, 0);
    fl = co->flows[co->nflows];
    /* a packet past MAX_SUPER is held too (alone: nothing can join it).
     * Out of memory, it goes out at once: the one case where C and Python
     * write different sequences. */
    if (grow(&fl->buf, &fl->cap, n > MAX_SUPER ? n : MAX_SUPER) < 0) {
        single(co, p, n, 0);
        return co->failed;
    }
    co->nflows++;
    memcpy(fl->buf + VNET_LEN, p, n);
    fl->tunnel = tunnel;
    fl->l3 = l3;
    fl->header = (unsigned)header;
    fl->size = fl->last = (unsigned)payload;
    fl->length = (unsigned)n;
    fl->count = 1;
    fl->next_seq = seq + (uint32_t)payload;
    fl->closed = !!(flags & PSH);
    return co->failed;
}
