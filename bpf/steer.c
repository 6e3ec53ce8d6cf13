// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
// sekisho XDP steering program.
//
// Outside interface (`xdp_outside`): IPv4 ESP (protocol 50) and IPv4 UDP to the IKE,
// NAT-T and L2TP ports go to the AF_XDP socket of the receive queue
// (bpf_redirect_map with XDP_PASS as the fallback when no socket is bound to that
// queue); everything else — ARP, ssh, the host stack — is XDP_PASS.
// Inside interface in router mode (`xdp_inside`): IPv4 packets whose destination is
// in the client address pool go to the AF_XDP socket; the rest is XDP_PASS.
//
// Built by build.rs with `clang -O2 -g -target bpf` (only linux-libc-dev headers are
// needed: the few libbpf helpers used are declared here). Ports and the pool are set
// by the loader in the `config` array map; counters are per-CPU.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define INLINE static inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

#define bswap16(x) __builtin_bswap16(x)
#define bswap32(x) __builtin_bswap32(x)

#define MAX_QUEUES 64

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks_map SEC(".maps");

/* config[0] = IKE port, [1] = NAT-T port, [2] = L2TP port (host order);
 * config[3] = pool network (host order), [4] = pool mask (host order). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u32);
} config SEC(".maps");

/* 0 = redirected, 1 = passed, 2 = malformed (passed) */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

INLINE void count(__u32 idx)
{
    __u64 *v = bpf_map_lookup_elem(&stats, &idx);
    if (v)
        *v += 1;
}

INLINE __u32 cfg(__u32 idx, __u32 dflt)
{
    __u32 *v = bpf_map_lookup_elem(&config, &idx);
    return (v && *v) ? *v : dflt;
}

INLINE int redirect(struct xdp_md *ctx)
{
    count(0);
    return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int xdp_outside(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end || eth->h_proto != bswap16(ETH_P_IP))
        goto pass;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->ihl < 5) {
        count(2);
        return XDP_PASS;
    }
    /* Non-first fragments carry no L4 header: the kernel reassembles them. */
    if (ip->frag_off & bswap16(0x3FFF))
        goto pass;
    if (ip->protocol == IPPROTO_ESP)
        return redirect(ctx);
    if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *udp = (void *)ip + ip->ihl * 4;
        if ((void *)(udp + 1) > data_end)
            goto pass;
        __u16 d = bswap16(udp->dest);
        if (d == cfg(0, 500) || d == cfg(1, 4500) || d == cfg(2, 1701))
            return redirect(ctx);
    }
pass:
    count(1);
    return XDP_PASS;
}

SEC("xdp")
int xdp_inside(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end || eth->h_proto != bswap16(ETH_P_IP))
        goto pass;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        goto pass;
    __u32 net = cfg(3, 0), mask = cfg(4, 0);
    if (mask && (bswap32(ip->daddr) & mask) == net)
        return redirect(ctx);
pass:
    count(1);
    return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
