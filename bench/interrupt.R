#!/usr/bin/env Rscript
# How long Ctrl-C takes to end a fit: for each engine (the cases of
# tests/testthat/helper-interrupt.R: GLMM SVI and QEM with K = 64, pln()
# full, rank 5, minibatch and QEM), a child R process starts the fit and
# gets SIGINT `wait` seconds later; the seconds from the signal to the end
# of the call, and what the call did (INTERRUPTED, or RETURNED a fit), over
# `reps` children per case. With --big, one more case: a full-covariance
# pln() fit at n = 20000, p = 1200 (about 9 GB), whose n p^2 products
# take seconds each, to show they are interrupted between their pieces
# (R/pln.R; src/models/pln/pln_eval.c, PLN_BLAS_FLOPS).
#
# Usage (from the repository root, with svir installed in LIB):
#   Rscript bench/interrupt.R [--reps=3] [--wait=1.5] [--big] [--only=REGEX] [--lib=LIB] [--out=DIR]
# The Markdown report goes to stdout and to <out>/interrupt-<date>.md.

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/interrupt.R [--reps=3] [--wait=1.5] [--big] [--only=REGEX] [--lib=LIB] [--out=DIR]",
                c(reps = "3", wait = "1.5", big = "0", only = "", lib = "", out = file.path(here, "results")))
source(file.path(here, "..", "tests", "testthat", "helper-interrupt.R"))
lib <- if (nzchar(a$lib)) normalizePath(a$lib) else dirname(find.package("svir"))
cases <- interrupt_cases()
if (a$big == "1") {
  cases$pln_full_big <- c("set.seed(1); Y <- matrix(rpois(20000 * 1200, 2), 20000, 1200)",
                          "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1)")
  cases$pln_full_widep <- c("set.seed(1); Y <- matrix(rpois(4000 * 3000, 2), 4000, 3000)",
                            "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1)")
  cases$pln_rank_big <- c("set.seed(1); Y <- matrix(rpois(50000 * 1000, 2), 50000, 1000)",
                          "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(rank = 50, residual = TRUE), seed = 1)")
  cases$pln_minibatch_big <- c("set.seed(1); Y <- matrix(rpois(20000 * 2000, 2), 20000, 2000)",
                               "go <- function() svi_fit(Y ~ 1, list(Y = Y), family = pln(), seed = 1, control = svi_control(batch_size = 2000))")
}
if (nzchar(a$only)) cases <- cases[grepl(a$only, names(cases))]
rows <- lapply(names(cases), function(nm) {
  r <- lapply(seq_len(as.integer(a$reps)), function(k) interrupt_child(cases[[nm]], as.numeric(a$wait), lib))
  s <- vapply(r, `[[`, 1, "seconds")
  what <- vapply(r, function(x) sub(".*RESULT ([A-Z]+).*", "\\1", gsub("\n", " ", x$output)), "")
  alive <- vapply(r, function(x) grepl("ALIVE", x$output), TRUE)
  sprintf("| %s | %.2f | %.2f | %.2f | %s | %d of %d |", nm, stats::median(s), min(s), max(s),
          paste(unique(what), collapse = ", "), sum(alive), length(r))
})
md <- c(sprintf("# Ctrl-C: seconds from SIGINT to the end of the call (%s)", format(Sys.Date())), "",
        sprintf("svir from %s; %s children per case, SIGINT %s s after the fit starts; %d cores, R %s.",
                lib, a$reps, a$wait, parallel::detectCores(), getRversion()), "",
        "| case | median s | min s | max s | the call | R went on (ALIVE) |",
        "|---|---:|---:|---:|---|---|", unlist(rows))
cat(md, sep = "\n")
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
writeLines(md, file.path(a$out, sprintf("interrupt-%s.md", format(Sys.Date()))))
