#!/bin/sh
# Instructions executed in the GLMM's pass over the observations
# (glmm_batch_loglik and what it calls), counted by callgrind, one thread:
# a count that this shared VM's load does not move, for comparing two
# builds where wall time cannot settle a few percent (bench/README.md).
#
# Usage (from the repository root):  sh bench/instructions.sh LIB [OUTDIR]
# Prints two counts: InstEval through bench/step.R --reps=1 (gaussian,
# three random intercepts, 1100 steps), and a Poisson random-intercept
# model (n = 20000, 200 groups, 300 steps). Takes a few minutes.
set -e
lib=${1:?usage: sh bench/instructions.sh LIB [OUTDIR]}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
cg="valgrind --tool=callgrind --toggle-collect=glmm_batch_loglik"
R -d "$cg --callgrind-out-file=$out/insteval.out" --vanilla --slave -f bench/step.R \
  --args --reps=1 --lib="$lib" > "$out/insteval.log" 2>&1
cat > "$out/poisson.R" <<'REOF'
.libPaths(c(commandArgs(TRUE)[1], .libPaths())); suppressMessages(library(svir))
set.seed(1); n <- 20000; g <- factor(sample(200, n, TRUE)); x <- rnorm(n)
d <- data.frame(y = rpois(n, exp(0.3 * x)), x = x, g = g)
f <- svi_fit(y ~ x + (1 | g), d, family = poisson(), seed = 1,
             control = svi_control(max_steps = 300, eval_every = 1000, threads = 1, progress = FALSE))
REOF
R -d "$cg --callgrind-out-file=$out/poisson.out" --vanilla --slave -f "$out/poisson.R" \
  --args "$lib" > "$out/poisson.log" 2>&1
echo "InstEval: $(grep 'refs:' "$out/insteval.log" | awk '{print $NF}') instructions"
echo "Poisson:  $(grep 'refs:' "$out/poisson.log" | awk '{print $NF}') instructions"
