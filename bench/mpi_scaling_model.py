#!/usr/bin/env python3
"""A model of one data-parallel training step on N nodes (docs/performance.md, "Data-parallel
training on MPI"): compute = batch x one image's time on a node / N; exchange = the running sum of
all gradients (N - 1 + segments hops of a 16 KB segment) + its broadcast (log2 N latencies + 2
vectors) + the step's other exchanges, latency only. Per-image times: this Zen 3 VM's 1-process x
2-thread float epochs (bench/mpi_scaling.sh). Prints the Markdown tables of docs/performance.md.

    python3 bench/mpi_scaling_model.py
"""
import math
# per-image compute on one node (2 cores, 2 threads): the median float epoch seconds / images of
# the 1 process x 2 threads column (docs/performance.md)
models = {
  "article":  dict(W=20410, coll=5,  t_img=0.876/54000),
  "Keras' convnet": dict(W=34826, coll=6, t_img=1.072/6000),
  "ResNet-8": dict(W=78426, coll=49, t_img=2.863/3000),
}
nets = {"10 Gb/s (TCP, alpha 20 us)": (10e9/8, 20e-6), "25 Gb/s (alpha 10 us)": (25e9/8, 10e-6), "100 Gb/s (RDMA, alpha 3 us)": (100e9/8, 3e-6)}
seg = 4096*4
def comm(W, coll, N, bw, a):
    # running sum: (N-1+S) segment hops; broadcast: log2(N) latencies + 2 vectors (scatter+allgather)
    S = math.ceil(W*4/seg)
    chain = (N - 1 + S) * (a + min(seg, W*4)/bw)
    bcast = math.ceil(math.log2(N)) * a + 2*W*4/bw
    others = (coll - 1) * (N - 1 + math.ceil(math.log2(N))) * a  # the small exchanges: latency only
    return chain + bcast + others
for name, m in models.items():
    print(f"\n**{name}**: {m['W']} values summed per step, {m['coll']} exchanges per step, {m['t_img']*1e6:.0f} us of compute per image on a node\n")
    print("| network | nodes | exchange per step | batch 32: speed-up | batch 512 | batch 4096 | batch where compute = exchange |")
    print("|---|---|---|---|---|---|---|")
    for net,(bw,a) in nets.items():
        for N in (8, 32, 128):
            c = comm(m['W'], m['coll'], N, bw, a)
            row=[]
            for B in (32, 512, 4096):
                if B < 4*N: row.append("- (< 4 images a node)"); continue
                t = B*m['t_img']/N + c
                row.append(f"{B*m['t_img']/t:.1f}x")
            bstar = N*c/m['t_img']
            print(f"| {net} | {N} | {c*1e3:.2f} ms | {row[0]} | {row[1]} | {row[2]} | {bstar:.0f} |")
