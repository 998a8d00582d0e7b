# The longest stretches without an interrupt poll in large pln() fits,
# from a build with the poll probe (dev/ARCHITECTURE.md, Interrupts):
#
#   SVIR_POLL_PROBE=yes R CMD INSTALL --no-test-load -l LIB .
#   Rscript dev/poll_gaps.R LIB [CASE ...]
#
# Each case runs in its own R process (a few steps of the fit); the probe
# prints every gap of more than 0.25 s between two polls, and this script
# reports the largest per case with the source lines of its two polls
# (addr2line). Cases (about 4-9 GB each): full (20000 x 1200, full
# covariance), widep (4000 x 3000, full), rank (50000 x 1000, rank 50 +
# diagonal), pca (the same data, PLN-PCA rank 50), minibatch (20000 x
# 2000, full, batches of 2000).
args <- commandArgs(trailingOnly = TRUE)
if (!length(args)) stop("usage: Rscript dev/poll_gaps.R LIB [CASE ...]")
lib <- normalizePath(args[1])
so <- file.path(lib, "svir", "libs", "svir.so")
cases <- list(
  full = c("Y <- matrix(rpois(20000 * 1200, 2), 20000)",
           "svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1, control = svi_control(max_steps = 6))"),
  widep = c("Y <- matrix(rpois(4000 * 3000, 2), 4000)",
            "svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1, control = svi_control(max_steps = 3))"),
  rank = c("Y <- matrix(rpois(50000 * 1000, 2), 50000)",
           "svi_fit(Y ~ 1, list(Y = Y), family = pln(rank = 50, residual = TRUE), seed = 1, control = svi_control(max_steps = 3))"),
  pca = c("Y <- matrix(rpois(50000 * 1000, 2), 50000)",
          "svi_fit(Y ~ 1, list(Y = Y), family = pln(rank = 50), seed = 1, control = svi_control(max_steps = 3))"),
  minibatch = c("Y <- matrix(rpois(20000 * 2000, 2), 20000)",
                "svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1, control = svi_control(batch_size = 2000, max_steps = 15))"))
todo <- if (length(args) > 1) args[-1] else names(cases)
where <- function(off) {
  out <- system2("addr2line", c("-f", "-e", so, off), stdout = TRUE)
  sprintf("%s (%s)", out[1], basename(out[2]))
}
cat(sprintf("| case | gaps > 0.25 s | largest, s | from | to |\n|---|---:|---:|---|---|\n"))
for (nm in todo) {
  script <- tempfile(fileext = ".R")
  writeLines(c(sprintf('.libPaths(c("%s", .libPaths()))', lib), "suppressMessages(library(svir))",
               "set.seed(1)", cases[[nm]][1], sprintf("invisible(suppressWarnings(%s))", cases[[nm]][2])),
             script)
  err <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE))
  g <- regmatches(err, regexec("svir poll gap ([0-9.]+) s from (0x[0-9a-f]+) to (0x[0-9a-f]+)", err))
  g <- do.call(rbind, g[lengths(g) == 4])
  if (is.null(g)) {
    cat(sprintf("| %s | 0 | | | |\n", nm))
    next
  }
  k <- which.max(as.numeric(g[, 2]))
  cat(sprintf("| %s | %d | %.2f | %s | %s |\n", nm, nrow(g), as.numeric(g[k, 2]), where(g[k, 3]),
              where(g[k, 4])))
}
