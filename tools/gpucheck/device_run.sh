#!/bin/bash
# One call on a lent GPU machine (no R there): svir's device checks, then
# the timings, each part a separate process under its own time limit, all
# within one deadline (at most 7 files back), so that a fault or a slow part cannot take the rest
# with it. Logs go to $OUT (the device tool brings them back).
#
#   tools/gpucheck/device_run.sh [DEADLINE_SECONDS [PART...]]   # default 460, all
#
# The binary: ./.gpurun/gpucheck with its libraries in ./.gpurun/lib
# (built on the developer's machine, carried with the call), else built
# here with `make -C tools/gpucheck`. The parts, in order:
#   glmm    the GLMM parity checks (gpucheck --quick --no-pln)
#   pln     the Poisson-lognormal parity checks (gpucheck --pln --quick)
#   numpyro NumPyro on issue 3's benchmark data (bench/gpu_glmm.py --save)
#   bench   svir on the same data, the observation pass's bandwidth and the
#           auto rule's sweep (gpucheck --bench --no-pln --data)
#   plnbench issue 5's PLN target (gpucheck --pln --bench)
#   memcheck the GLMM checks under compute-sanitizer's memcheck
#   mix     the count-mixture parity checks (gpucheck --mix --quick)
#   mixbench issue 17's count-mixture target (gpucheck --mix --bench)
#   bnn     the networks' parity checks (gpucheck --bnn --quick)
#   bnnbench issue 18's network timing, width 1024, batch 4096 (gpucheck --bnn --bench)
# and, named only: ncu (the observation pass's kernels under Nsight Compute), qembench (issue 4's large two-level GLMM, gpucheck
# --qem-bench), numpyro-long (NumPyro for 10^4 steps from both inits; with
# TARGET=ELBO in the environment, the step at which it reaches that ELBO)
# and bnnnumpyro (NumPyro's network step at bnnbench's width and batch on
# the machine's JAX, its device in the log: issue 18's GPU comparison,
# `device_run.sh 300 bnn bnnbench bnnnumpyro`).
set -u
OUT=${OUT:-/tmp/gpucheck-out}
mkdir -p "$OUT"
deadline=$(( $(date +%s) + ${1:-460} ))
root=$(pwd)
if [ -x "$root/.gpurun/gpucheck" ]; then
    export LD_LIBRARY_PATH="$root/.gpurun/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    G="$root/.gpurun/gpucheck"
else
    make -C tools/gpucheck -j"$(nproc)" > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
    G="$root/tools/gpucheck/gpucheck"
fi
summary="$OUT/summary.txt"
: > "$summary"
# part NAME CAP_SECONDS COMMAND...: runs COMMAND for at most CAP seconds
# (less if the deadline is nearer), its output to $OUT/NAME.log
part() {
    local name=$1 cap=$2 left
    shift 2
    left=$(( deadline - $(date +%s) ))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 10 ]; then
        echo "$name: not run (deadline)" | tee -a "$summary"
        return
    fi
    local t0=$(date +%s)
    echo "=== $name (at most $cap s): $*"
    timeout -k 5 "$cap" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local msg="$name: exit $rc after $(( $(date +%s) - t0 )) s"
    [ "$rc" -eq 124 ] && msg="$msg (stopped at the limit)"
    echo "$msg" | tee -a "$summary"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" --version 2>/dev/null | tail -1
} >> "$summary" 2>&1
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false OMP_NUM_THREADS=16
# the parts named on the command line after the deadline, else all
parts=${*:2}
[ -z "$parts" ] && parts="glmm pln mix bnn numpyro bench plnbench mixbench bnnbench memcheck"
for p in $parts; do
    case $p in
    glmm) part glmm 150 "$G" --quick --no-pln --no-mix --no-bnn ;;
    mix) part mix 90 "$G" --mix --quick ;;
    mixbench) part mixbench 150 "$G" --mix --bench ;;
    bnn) part bnn 60 "$G" --bnn --quick ;;
    bnnbench) part bnnbench 90 "$G" --bnn --bench ;;
    bnnnumpyro)
        # NumPyro's step on the machine's JAX (its GPU where it has one)
        part bnnnumpyro 120 python3 bench/bnn_numpyro.py --synthetic 50000,10 --hidden 1024 --act relu \
            --batch 4096 --steps 200 --lr 0.01 --seed 1 --timing-only --init sample --subsample index \
            --out "$OUT/bnn_numpyro.json" ;;
    pln) part pln 90 "$G" --pln --quick ;;
    numpyro) part numpyro 110 python3 bench/gpu_glmm.py --save /tmp/glmm ;;
    # NumPyro for 10^4 full-batch steps from both of its inits, and the step
    # at which it reaches the ELBO svir-cuda had after 10^3 (TARGET)
    numpyro-long)
        part numpyro_uniform 110 python3 bench/gpu_glmm.py --save /tmp/glmm --steps 10000 --batch 0 \
            ${TARGET:+--target $TARGET}
        part numpyro_median 90 python3 bench/gpu_glmm.py --steps 10000 --batch 0 --init median \
            ${TARGET:+--target $TARGET} ;;
    bench)
        if [ -f /tmp/glmm/header.json ]; then
            part bench 150 "$G" --bench --no-pln --no-mix --no-bnn --data /tmp/glmm
        else
            part bench 150 "$G" --bench --no-pln --no-mix --no-bnn
        fi ;;
    plnbench) part plnbench 120 "$G" --pln --bench ;;
    qembench) part qembench 150 "$G" --qem-bench ;;
    memcheck) part memcheck 120 "$CS" --tool memcheck --print-limit 20 "$G" --quick --no-pln --no-mix --no-bnn ;;
    # the observation pass's kernels at issue 3's size under Nsight Compute
    # (time, DRAM bytes, throughput), clocks left as they are
    ncu) part ncu 150 "$(command -v ncu || echo /usr/local/cuda/bin/ncu)" --clock-control none \
            -k "regex:k_obs|k_group" -c 8 --section SpeedOfLight \
            --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
            "$G" --bench --no-pln --no-mix --no-bnn --steps 100 ;;
    *) echo "unknown part $p" | tee -a "$summary" ;;
    esac
done
echo
# the lines that matter: failures, and the timing lines
grep -h -E "FAILED|numpyro|target|ELBO \(mean|observation pass|fit steps|N = .*x$|PLN benchmark|count-mixture|network steps|QEM|SVI|globals|ERROR SUMMARY|Invalid|k_obs|k_group|dram__bytes|gpu__time_duration|Memory Throughput|DRAM Throughput" \
    "$OUT"/*.log 2>/dev/null | cut -c1-600
echo "checks passed: $(cat "$OUT"/glmm.log "$OUT"/pln.log "$OUT"/mix.log "$OUT"/bnn.log 2>/dev/null | grep -c ': ok$'), failed: $(cat "$OUT"/*.log 2>/dev/null | grep -c 'FAILED')"
cat "$summary"
