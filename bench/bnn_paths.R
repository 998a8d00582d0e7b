#!/usr/bin/env Rscript
# The networks' step by path and instruction set (issue 18), on the data
# of bench/bnn.R's speed part (n = 50,000, 10 inputs, one relu layer, 200
# steps at batch 4096): the fused pass on the machine's best kernels, on
# AVX2's at most and on the baseline's (SSE2), and the layer-by-layer
# loops and BLAS paths, through the developers' options svir.bnn_isa and
# svir.bnn_path; the median of 3 fits' loop time per step. Also R's BLAS
# dgemm rate (n = 3000) on one thread and on all, the products' ceiling
# in bench/README.md's floor.
#   Rscript bench/bnn_paths.R [--lib=DIR] [--out=bench/results]
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/bnn_paths.R [--lib=DIR] [--out=DIR]",
                c(lib = "", out = file.path(here, "results"), dgemm = ""))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
# the dgemm child: its time on this process's BLAS threads
if (nzchar(a$dgemm)) {
  n <- 3000L
  A <- matrix(stats::rnorm(n * n), n)
  t <- min(vapply(1:3, function(k) system.time(A %*% A)[["elapsed"]], 0))
  cat(2 * n^3 / t / 1e9, "\n")
  quit(save = "no")
}
suppressPackageStartupMessages(library(svir))
lines <- c(sprintf("# The networks' step by path and instruction set (%s)", format(Sys.Date())), "",
           sprintf("`Rscript bench/bnn_paths.R`; %s; BLAS %s; svir %s; %d cores.", R.version.string,
                   sessionInfo()$BLAS, as.character(utils::packageVersion("svir")), parallel::detectCores()), "")
say <- function(...) {
  l <- sprintf(...)
  cat(l, "\n", sep = "")
  lines <<- c(lines, l)
}
rscript <- file.path(R.home("bin"), "Rscript")
gf <- function(threads) {
  out <- system2(rscript, c(file.path(here, "bnn_paths.R"), "--dgemm=1"), stdout = TRUE,
                 env = if (threads) sprintf("OPENBLAS_NUM_THREADS=%d", threads))
  as.numeric(utils::tail(out, 1))
}
say("R's BLAS dgemm (n = 3000, best of 3): %.1f GFLOP/s on one thread, %.1f on all.", gf(1), gf(0))
say("")
n <- 50000L
set.seed(11)
X <- matrix(stats::rnorm(n * 10), n, dimnames = list(NULL, paste0("x", 1:10)))
d <- data.frame(X, y = sin(X[, 1]) + stats::rnorm(n, sd = 0.1))
cases <- list(c("fused, the machine's best kernels", 0, 0), c("fused, AVX2 at most", 0, 2),
              c("fused, baseline (SSE2)", 0, 1), c("layer by layer, loops", 1, 0),
              c("layer by layer, BLAS", 2, 0))
say("| path | width 256 ms/step | width 1024 ms/step |")
say("|---|---:|---:|")
for (cs in cases) {
  op <- options(svir.bnn_path = as.integer(cs[2]), svir.bnn_isa = as.integer(cs[3]))
  ms <- vapply(c(256L, 1024L), function(h) stats::median(vapply(1:3, function(k) {
    fit <- suppressWarnings(svi_fit(y ~ ., d, model = bnn(hidden = h), seed = 1,
                                    control = svi_control(batch_size = 4096L, max_steps = 200L, eval_every = 200L,
                                                          lr = 0.01, lr_schedule = "constant", ndraws = 1L,
                                                          progress = FALSE)))
    1e3 * sum(fit$time_split[1:4]) / fit$steps
  }, 0)), 0)
  options(op)
  say("| %s | %.2f | %.2f |", cs[1], ms[1], ms[2])
}
say("")
say("Batch 4096, 200 steps, the median of 3 fits' loop time per step on the default threads.")
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(a$out, sprintf("bnn-paths-%s.md", format(Sys.Date()))))
