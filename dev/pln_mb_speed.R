# Minibatch pln() fits against the full-batch fit of the same data: time,
# epochs, and the gap to the full-batch ELBO, B and Sigma (issue 15's
# streamed variational EM; dev/PLN.md). Simulated 20000 x 50 counts with a
# rank-3-plus-noise latent covariance, batches of 1000 rows; then a 40 x 5
# low-count example in batches of 10, against the full-batch fit at its
# default tolerance and at 1e-12. With svir
# installed in LIB (two libraries, to compare builds):
#
#   Rscript dev/pln_mb_speed.R LIB [LIB2]
#
args <- commandArgs(TRUE)
sim <- function() {
  set.seed(1)
  n <- 20000; p <- 50; q <- 3
  W <- matrix(rnorm(p * q, 0, 0.4), p, q)
  x <- rnorm(n)
  Z <- 1 + outer(x, rnorm(p, 0, 0.3)) + matrix(rnorm(n * q), n, q) %*% t(W) +
    matrix(rnorm(n * p, 0, 0.3), n, p)
  d <- data.frame(x = x)
  d$Y <- matrix(rpois(n * p, exp(Z)), n, p)
  d
}
d <- sim()
fams <- list(full = quote(pln()), diagonal = quote(pln(covariance = "diagonal")),
             rank3 = quote(pln(rank = 3, residual = TRUE)))
for (lib in args) {
  code <- sprintf('
    .libPaths(c("%s", .libPaths())); suppressMessages(library(svir))
    d <- readRDS("%s")
    for (nm in names(fams)) {
      fam <- eval(fams[[nm]])
      full <- svi_fit(Y ~ x, d, family = fam)
      mb <- svi_fit(Y ~ x, d, family = fam, control = svi_control(batch_size = 1000), seed = 1)
      cat(sprintf("%%-8s full %%6.2f s  minibatch %%7.2f s (%%2d epochs)  ELBO gap %%.2e  max|dB| %%.4f  max|dSigma| %%.4f\\n",
                  nm, full$time, mb$time, mb$epochs, (full$elbo - mb$elbo) / abs(full$elbo),
                  max(abs(coef(mb) - coef(full))), max(abs(sigma(mb) - sigma(full)))))
    }
    set.seed(3)
    pd <- data.frame(x = rnorm(40))
    pd$Y <- matrix(rpois(40 * 5, exp(1 + 0.3 * pd$x)), 40)
    full <- svi_fit(Y ~ x, pd, family = pln())
    ctl <- svi_control(max_steps = 20000)
    ctl$pln_tol <- 1e-12
    tight <- svi_fit(Y ~ x, pd, family = pln(), control = ctl)
    mb <- suppressWarnings(svi_fit(Y ~ x, pd, family = pln(), seed = 1,
                                   control = svi_control(max_steps = 2000, batch_size = 10)))
    cat(sprintf("40 x 5: full batch %%.4f below its 1e-12 fit; minibatch %%d epochs, %%.4f below the full batch\\n",
                tight$elbo - full$elbo, mb$epochs, full$elbo - mb$elbo))', lib, f <- tempfile(fileext = ".rds"))
  saveRDS(d, f)
  saveRDS(fams, g <- tempfile(fileext = ".rds"))
  cat("library", lib, "\n")
  system2(file.path(R.home("bin"), "Rscript"),
          c("-e", shQuote(paste0("fams <- readRDS('", g, "');", code))))
}
