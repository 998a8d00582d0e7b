# PLN-PCA's local maxima on pyPLNmodels' oaks data (116 x 114, rank 3;
# dev/PLN.md, bench/README.md): svir's fit (deterministic start) against
# --fits PlnPCA fits (random starts), each ELBO computed by svir's
# objective at the fit's parameters. 2026-12-03, this 2-core VM, 10 fits:
# svir -118,305.5; PlnPCA -116,743.3 once, -119,809.8 to -119,836.2 nine
# times.
#   Rscript dev/pln_pca_oaks.R --python=PY [--fits=10] [--lib=LIB]
source("bench/args.R")
a <- bench_args("usage: Rscript dev/pln_pca_oaks.R --python=PY [--fits=10] [--lib=LIB]",
                c(python = "python3", fits = "10", lib = ""))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressMessages(library(svir))
tmp <- tempfile("oaks")
dir.create(tmp)
py <- function(...) stopifnot(system2(a$python, c("bench/pln_pca.py", ...), stdout = FALSE, stderr = FALSE) == 0)
rd <- function(f, n, m) matrix(readBin(file.path(tmp, f), "double", n * m), n, m)
py("export", tmp)
n <- 116
p <- 114
q <- 3
Y <- rd("oaks.Y", n, p)
O <- rd("oaks.O", n, p)
writeBin(rep(1, n), file.path(tmp, "oaks.X"))
writeLines(paste(n, p, 1), file.path(tmp, "oaks.dims"))
dat <- list(Y = Y, O = O, X = matrix(1, n, 1), P = matrix(0, 1, n), lgy = sum(lgamma(Y + 1)),
            cov = svir:::svir_codes$pln_cov[["pca"]], q = q, n = n, p = p, d = 1L)
ev <- function(x) .Call(svir:::C_svir_pln_eval_r, dat, x)$J
f <- svi_fit(Y ~ 1 + offset(O), list(Y = Y, O = O), family = pln(rank = q))
cat(sprintf("svir: ELBO %.1f (%d iterations, %.2f s)\n", f$elbo, f$steps, f$time))
K <- as.integer(a$fits)
py("fit", tmp, "oaks", q, K)
e <- vapply(seq_len(K) - 1L, function(r) {
  g <- function(x, rows, cols) rd(sprintf("oaks.pyp%d.%s", r, x), rows, cols)
  ev(c(g("M", n, q), log(abs(g("S", n, q))), g("C", p, q), g("B", 1, p)))
}, 0)
cat(sprintf("PlnPCA, %d fits: ELBO %s\n", K, paste(sprintf("%.1f", sort(e, decreasing = TRUE)), collapse = ", ")))
cat(sprintf("PlnPCA fits above svir's: %d of %d\n", sum(e > f$elbo), K))
