/* The compiled per-packet loops' interface (cffi reads this file as its
 * cdef, so: declarations only, no preprocessor lines). The C sources
 * include <stdint.h> and <stddef.h> before it.
 *
 * Cryptography is libsodium's, reached through function pointers taken
 * from PyNaCl's own build (cyphonic/fastpath/__init__.py): one libsodium
 * in the process, nothing to link against. */

typedef int (*fp_encrypt_fn)(unsigned char *c, unsigned long long *clen_p,
    const unsigned char *m, unsigned long long mlen,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *nsec, const unsigned char *npub, const unsigned char *k);
typedef int (*fp_decrypt_fn)(unsigned char *m, unsigned long long *mlen_p,
    unsigned char *nsec, const unsigned char *c, unsigned long long clen,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *npub, const unsigned char *k);
typedef int (*fp_mac_fn)(unsigned char *out, size_t outlen,
    const unsigned char *in, unsigned long long inlen,
    const unsigned char *key, size_t keylen,
    const unsigned char *salt, const unsigned char *personal);

/* --- replay window (core/replay.py's semantics, as a 2048-bit ring) --- */

struct fp_replay {
    uint64_t highest;
    uint32_t seen;          /* 0: nothing seen yet (Python's highest = -1) */
    uint64_t bits[32];      /* bit (c % 2048) set = counter c seen, for c in (highest-2048, highest] */
};
int fp_replay_check(const struct fp_replay *w, uint64_t counter, uint64_t limit);
int fp_replay_update(struct fp_replay *w, uint64_t counter);

/* --- coalescer (core/offload.Coalescer's rules, byte for byte) --- */

struct fp_coalescer;
struct fp_coalescer *fp_coalescer_new(int fd);
void fp_coalescer_free(struct fp_coalescer *co);
/* one received inner packet of tunnel `tunnel_key`; returns the number of
 * TUN writes that failed (errno in co->... via fp_coalescer_errno) */
int fp_coalescer_add(struct fp_coalescer *co, const unsigned char *packet, size_t n, uint64_t tunnel_key);
int fp_coalescer_flush(struct fp_coalescer *co);
int fp_coalescer_errno(const struct fp_coalescer *co);

/* --- send: one TUN frame (virtio header + packet, up to a 64 KB
 * super-packet) cut into segments (core/offload.plan's rules) and sealed
 * into capsules laid end to end in the GSO send buffer --- */

enum {
    FP_DONE = 0,          /* the frame is in the run */
    FP_FLUSH = 1,         /* send the run, start a new one, call again with *resume */
    FP_E_COUNTER = -1,    /* the send counter reached its limit */
    FP_E_FRAME = -2,      /* unusable frame (offload.plan raises ParseError) */
    FP_E_TOO_LARGE = -3   /* a segment larger than one datagram may be */
};

struct fp_sender {
    fp_encrypt_fn encrypt;
    const unsigned char *key;        /* 32-byte send End Key */
    uint32_t remote_index;
    uint64_t counter;                /* next counter to use */
    uint64_t limit;                  /* the counter may not reach it */
    /* through the TRS: `pre` bytes of relay head before each capsule and a
     * 16-byte MAC behind it (pre = 0: direct) */
    uint32_t pre;
    const unsigned char *relay_head;
    const unsigned char *mac_key;
    size_t mac_key_len;
    fp_mac_fn mac;
};

struct fp_run {
    uint32_t length;       /* bytes laid end to end */
    uint32_t count;        /* datagrams */
    uint32_t size;         /* the first datagram's size (GSO segment size) */
    uint32_t short_;       /* a shorter datagram ended the run */
    uint64_t inner;        /* plaintext bytes */
    uint32_t max_bytes;    /* MAX_GSO_BYTES */
    uint32_t max_segments; /* MAX_GSO_SEGMENTS */
};

int fp_check_frame(const unsigned char *frame, size_t n);
int fp_seal_frame(struct fp_sender *s, struct fp_run *run, unsigned char *out,
                  const unsigned char *frame, size_t n, uint32_t *resume);

/* --- receive: a run of one GRO batch's datagrams for one tunnel, opened
 * in place; stops at the first datagram that is not a data capsule of
 * this tunnel (direct) or of this relay session (relayed) --- */

struct fp_receiver {
    fp_decrypt_fn decrypt;
    const unsigned char *key;        /* 32-byte receive End Key */
    uint32_t local_index;
    struct fp_replay *replay;
    uint64_t limit;                  /* COUNTER_LIMIT */
    /* the peer's virtual IPs (inner source check); NULL: the caller checks */
    const unsigned char *vip4;
    const unsigned char *vip6;
    uint64_t tunnel_key;
    /* relayed frames of one session (relayed = 0: direct capsules) */
    uint32_t relayed;
    uint32_t session;
    uint32_t own_flags;              /* our FROM_RESPONDER bit: the peer's frames lack it */
    const unsigned char *mac_key;
    size_t mac_key_len;
    fp_mac_fn mac;
    uint32_t loss;                   /* test hook: drop when a random uint32 < loss */
    uint64_t rng;
    /* what the run did (fp_open_run zeroes these first) */
    uint32_t rx_packets;
    uint64_t rx_bytes;
    uint32_t newest;                 /* some datagram was newer than every counter before */
    uint32_t drop_unauthenticated, drop_replayed, drop_limit, drop_spoofed, drop_mac, drop_loss;
    uint32_t write_failed;
    /* without a coalescer: the plaintexts' (offset, length) in buf */
    uint32_t *spans;
    uint32_t spans_max;
    uint32_t spans_used;
};

size_t fp_open_run(struct fp_receiver *r, struct fp_coalescer *co, unsigned char *buf,
                   size_t pos, size_t n, size_t size);

/* --- the TRS: a run of one GRO batch's data frames of one session side
 * (the same 6-byte relay head as the first), each with a good relay MAC;
 * returns where the run ends (the first frame that is not one) --- */

size_t fp_relay_run(const unsigned char *buf, size_t pos, size_t n, size_t size, const unsigned char *head,
                    const unsigned char *key, size_t keylen, fp_mac_fn mac);
