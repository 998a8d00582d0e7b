# Count mixtures (issue 17) on the Twins data: a held-out criterion for K.
#
#   Rscript bench/mixture_twins_heldout.R [--lib=DIR] [--Ks=1:7] [--folds=5] [--seed=1]
#
# dmn's Laplace criterion chooses K = 4 on Twins (Holmes et al. 2012;
# bench/mixture_twins.R), svir's ELBO criterion 7. This asks a third
# question, the one the issue names besides ICL: how well does each K
# predict samples it was not fitted to? The 278 samples are split into
# folds; for each K and fold svir fits count_mixture(K, dist = "dirmult",
# nstart = 1) to the other folds and scores the held-out samples by their
# log predictive density, log mean_s sum_k pi_k^(s) DM(y_i | alpha_k^(s)),
# over 200 posterior draws (svir:::svir_mix_new_rows, the code behind
# predict() on new rows). The sum over all samples is the criterion; the
# largest wins. Writes bench/results/mixture-twins-heldout-DATE.md.
here <- local({
  f <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(f)) dirname(normalizePath(sub("^--file=", "", f[1]))) else "bench"
})
args <- commandArgs(TRUE)
arg <- function(name, default) {
  v <- grep(paste0("^--", name, "="), args, value = TRUE)
  if (length(v)) sub(paste0("^--", name, "="), "", v[1]) else default
}
lib <- arg("lib", "")
if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
Ks <- eval(parse(text = arg("Ks", "1:7")))
nf <- as.integer(arg("folds", "5"))
seed <- as.integer(arg("seed", "1"))
suppressPackageStartupMessages(library(svir))

fl <- system.file(package = "DirichletMultinomial", "extdata", "Twins.csv")
count <- t(as.matrix(read.csv(fl, row.names = 1)))
n <- nrow(count)
set.seed(seed)
fold <- sample(rep(seq_len(nf), length.out = n))
rows <- function(w) {
  d <- data.frame(row.names = rownames(count)[w])
  d$Y <- count[w, , drop = FALSE]
  d
}
res <- NULL
for (K in Ks) {
  lpd <- 0
  t0 <- proc.time()[["elapsed"]]
  for (f in seq_len(nf)) {
    fit <- suppressWarnings(svi_fit(Y ~ 1, rows(fold != f), seed = f,
                                    family = count_mixture(K = K, dist = "dirmult", nstart = 1)))
    ll <- svir:::svir_mix_new_rows(fit, rows(fold == f), 200, TRUE, stop)$loglik
    m <- apply(ll, 2, max)
    lpd <- lpd + sum(m + log(colMeans(exp(sweep(ll, 2, m)))))
  }
  res <- rbind(res, data.frame(K = K, heldout = lpd, seconds = proc.time()[["elapsed"]] - t0))
  cat(sprintf("K = %d: held-out log predictive density %.1f (%.1f s)\n", K, lpd, res$seconds[nrow(res)]))
}
best <- res$K[which.max(res$heldout)]
out <- file.path(here, "results", sprintf("mixture-twins-heldout-%s.md", format(Sys.Date())))
con <- file(out, "w")
cat(sprintf("# Twins: a held-out criterion for K (%s)\n\n", format(Sys.Date())),
    sprintf("`Rscript bench/mixture_twins_heldout.R --Ks=%s --folds=%d --seed=%d`; R %s, BLAS %s; svir %s; %d samples x %d taxa; %d folds, count_mixture(dist = \"dirmult\", nstart = 1), 200 draws per held-out sample.\n\n",
            deparse(Ks), nf, seed, getRversion(), extSoftVersion()[["BLAS"]], packageVersion("svir"),
            n, ncol(count), nf),
    "| K | held-out log predictive density | gain over K - 1 | seconds (all folds) |\n|---:|---:|---:|---:|\n",
    sprintf("| %d | %.1f | %s | %.1f |\n", res$K, res$heldout,
            c("", sprintf("%.1f", diff(res$heldout))), res$seconds),
    sprintf("\nLargest at K = %d.\n", best), sep = "", file = con)
close(con)
cat(sprintf("largest at K = %d; written to %s\n", best, out))
