# The attenuation of the PLN covariance estimate at small counts (dev/PLN.md,
# "What the recovery test showed"): test-pln.R's AR(1) simulation (n = 500,
# p = 50, neighbours' covariance 0.24) with sequencing depths scaled by 1, 10
# and 100; the estimated neighbours' covariance against that of the true
# latent residuals (the oracle). Run from the repository root with svir
# installed: Rscript dev/pln_attenuation.R
suppressMessages(library(svir))
sim <- function(n, p, Sigma, seed, scale) {
  set.seed(seed)
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sigma)
  depth <- scale * exp(rnorm(n, 0, 0.3))
  d <- data.frame(x = x, depth = depth)
  d$Y <- matrix(rpois(n * p, depth * exp(Z)), n)
  list(d = d, B = B, Z = Z, x = x)
}
p <- 50
for (sc in c(1, 10, 100)) {
  s <- sim(500, p, 0.4 * 0.6^abs(outer(1:p, 1:p, "-")), seed = 3, scale = sc)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln())
  oracle <- crossprod(s$Z - cbind(1, s$x) %*% s$B) / 500
  cat(sprintf("depth x %g: neighbours' covariance %.3f (oracle %.3f), mean variance %.3f\n", sc,
              mean(diag(sigma(fit)[-1, -p])), mean(diag(oracle[-1, -p])), mean(diag(sigma(fit)))))
}
