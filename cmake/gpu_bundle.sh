#!/usr/bin/env bash
# Packs the CUDA tests, example and benchmarks into .gpu/ (ignored by git) for a GPU
# machine that has the CUDA driver but not this project's build dependencies (Eigen,
# xsimd, Google Benchmark): the programs are built here (cudart is linked statically;
# the benchmark's libbenchmark travels along, cuBLAS is taken from the GPU machine), then
#   bash .gpu/run.sh            # on the GPU machine; logs and bench.json go to $OUT (or .gpu/out)
# (TEST_TIMEOUT, BENCH_TIMEOUT: seconds allowed per test program and for the benchmarks;
# BENCH_FILTER: a --benchmark_filter regex.)
# With the session's device tool: run(command="bash .gpu/run.sh", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d /usr/local/cuda/bin ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
# Every program for every configured architecture (CI narrows the benchmark and example).
cmake --preset cuda -DQUAROT_CUDA_BENCH_ARCHITECTURES= >/dev/null
cmake --build --preset cuda
rm -rf .gpu && mkdir -p .gpu
cp build/cuda/tests/test_cuda_fwht build/cuda/tests/test_cuda_gemm build/cuda/examples/cuda_quantized_linear \
   build/cuda/bench/quarot_bench_cuda .gpu/
cp "$(ldd build/cuda/bench/quarot_bench_cuda | awk '/libbenchmark/ {print $3}')" .gpu/
cat > .gpu/run.sh <<'EOF'
#!/usr/bin/env bash
# quarot on a GPU: the CUDA tests (every kernel against the CPU reference), the example,
# then the benchmarks. Output under $OUT (the device tool's) or .gpu/out.
cd "$(dirname "$0")"
out="${OUT:-$PWD/out}"
mkdir -p "$out"
cublas="$(find /usr/local /opt /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)"
export LD_LIBRARY_PATH="$PWD:${cublas:+$(dirname "$cublas"):}${LD_LIBRARY_PATH:-}"
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv; } > "$out/device.txt" 2>&1
status=0
for t in test_cuda_fwht test_cuda_gemm cuda_quantized_linear; do
  # A kernel that hangs (an mbarrier never completing) must not eat the device session:
  # each program has a bound, exit 124 when it ran past it.
  timeout "${TEST_TIMEOUT:-240}" ./"$t" > "$out/$t.log" 2>&1
  rc=$?
  [ $rc -ne 124 ] || echo "$t: timed out after ${TEST_TIMEOUT:-240} s" >> "$out/$t.log"
  echo "$t: exit $rc ($(tail -1 "$out/$t.log"))"
  grep -m 20 FAILED "$out/$t.log"
  [ $rc -eq 0 ] || status=1
done
grep -h -m 3 "self-test" "$out"/*.log  # the wgmma check `automatic` relies on (sm_90a only)
timeout "${BENCH_TIMEOUT:-400}" ./quarot_bench_cuda --benchmark_min_time=0.2 --benchmark_counters_tabular=true ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"} \
  --benchmark_out="$out/bench.json" --benchmark_out_format=json > "$out/bench.txt" 2>&1
echo "bench: exit $? (table in bench.txt, JSON in bench.json)"
exit $status
EOF
chmod +x .gpu/run.sh
du -sh .gpu
