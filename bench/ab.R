#!/usr/bin/env Rscript
# Two commands in one run, alternated (A B A B ...), for comparisons that
# the machine's drift must not bias: an old build against a new one (their
# --lib), or one BLAS against another (R_LD_LIBRARY_PATH). Each run's whole
# wall time is measured from here; numbers the commands print are picked
# out of their output by --extract regular expressions (one capture group
# each; every match counts).
#
# Usage (from the repository root):
#   Rscript bench/ab.R --pairs=8 --a='CMD A' --b='CMD B' \
#       [--extract='all steps +([0-9.]+) ms/step' ...] [--out=DIR]
# CMD is run by the shell (so `VAR=value Rscript ...` works); its output
# goes to DIR/a-<k>.txt and DIR/b-<k>.txt (default: a temporary folder).
# Reported: the median, minimum and maximum of each side's wall time and of
# the pairwise ratio A/B, and for every --extract the median of A's and of
# B's matches and their ratio.
#
# Examples (bench/README.md):
#   Rscript bench/ab.R --pairs=8 --a='Rscript bench/step.R --reps=5 --lib=NEW' \
#       --b='Rscript bench/step.R --reps=5 --lib=OLD' --extract='all steps +([0-9.]+) ms/step'
#   Rscript bench/ab.R --pairs=5 --a='Rscript bench/pln.R --no-numpyro --reps=3 --out=/tmp/a' \
#       --b='R_LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/blas:/usr/lib/x86_64-linux-gnu/lapack:/usr/lib/R/lib:/usr/lib/x86_64-linux-gnu Rscript bench/pln.R --no-numpyro --reps=3 --out=/tmp/b' \
#       --extract='diagonal \| ([0-9.]+)' --extract='full \| ([0-9.]+)'

a <- commandArgs(trailingOnly = TRUE)
vals <- function(flag) sub(paste0("^--", flag, "="), "", grep(paste0("^--", flag, "="), a, value = TRUE))
one <- function(flag, default = NULL) {
  v <- vals(flag)
  if (length(v)) v[length(v)] else default
}
cmd_a <- one("a")
cmd_b <- one("b")
if (is.null(cmd_a) || is.null(cmd_b)) {
  cat("usage: Rscript bench/ab.R --pairs=N --a='CMD A' --b='CMD B' [--extract=REGEX ...] [--out=DIR]\n")
  quit(status = 2L)
}
pairs <- as.integer(one("pairs", "5"))
extract <- vals("extract")
out <- one("out", tempfile("ab-"))
dir.create(out, showWarnings = FALSE, recursive = TRUE)

run <- function(cmd, file) {
  t0 <- proc.time()[["elapsed"]]
  st <- system(paste(cmd, ">", shQuote(file), "2>&1"))
  if (st != 0) stop(sprintf("'%s' failed (status %d); its output is in %s", cmd, st, file))
  proc.time()[["elapsed"]] - t0
}
ta <- tb <- numeric(pairs)
fa <- file.path(out, sprintf("a-%d.txt", seq_len(pairs)))
fb <- file.path(out, sprintf("b-%d.txt", seq_len(pairs)))
for (k in seq_len(pairs)) {
  ta[k] <- run(cmd_a, fa[k])
  tb[k] <- run(cmd_b, fb[k])
  message(sprintf("pair %d of %d: A %.2f s, B %.2f s", k, pairs, ta[k], tb[k]))
}

picks <- function(files, rx) {
  unlist(lapply(files, function(f) {
    x <- readLines(f, warn = FALSE)
    m <- regmatches(x, regexec(rx, x, perl = TRUE))
    as.numeric(vapply(m[lengths(m) > 1L], `[`, "", 2L))
  }))
}
f3 <- function(x) sprintf("%.3f", x)
si <- utils::sessionInfo()
cat(sprintf("bench/ab.R, %s, %d pairs; A: %s\nB: %s\n", format(Sys.time(), "%Y-%m-%d %H:%M"),
            pairs, cmd_a, cmd_b))
cat(sprintf("machine: %d cores; %s; BLAS of this R: %s; load at end %s\n\n",
            parallel::detectCores(), R.version.string, if (is.null(si$BLAS)) "unknown" else si$BLAS,
            sub("^(\\S+ \\S+ \\S+).*", "\\1", readLines("/proc/loadavg", warn = FALSE)[1])))
cat("| figure | A median | B median | A/B | A min / max | B min / max |\n|---|---:|---:|---:|---|---|\n")
r <- ta / tb
cat(sprintf("| whole run, wall s | %s | %s | %s (pairs: %s to %s) | %s / %s | %s / %s |\n",
            f3(median(ta)), f3(median(tb)), f3(median(r)), f3(min(r)), f3(max(r)),
            f3(min(ta)), f3(max(ta)), f3(min(tb)), f3(max(tb))))
for (rx in extract) {
  xa <- picks(fa, rx)
  xb <- picks(fb, rx)
  if (!length(xa) || !length(xb)) {
    cat(sprintf("| `%s` | no match | | | | |\n", rx))
    next
  }
  cat(sprintf("| `%s` (%d, %d matches) | %s | %s | %s | %s / %s | %s / %s |\n", rx, length(xa),
              length(xb), f3(median(xa)), f3(median(xb)), f3(median(xa) / median(xb)),
              f3(min(xa)), f3(max(xa)), f3(min(xb)), f3(max(xb))))
}
cat(sprintf("\noutputs in %s\n", out))
