# PLN-PCA's convergence and accuracy (dev/PLN.md, "Rank q (PLN-PCA)"):
# n = 500, p = 50, rank 5 simulated with no residual variance, mean counts
# about 10-30. Fits at the default tolerance and at 1e-14, the factor model
# (residual = TRUE) on the same data, and the relative Frobenius error of
# Sigma against the truth, with the oracle (the covariance of the true
# latent residuals). Rscript dev/pln_pca_converge.R [LIB]
args <- commandArgs(TRUE)
if (length(args)) .libPaths(c(args[1], .libPaths()))
suppressMessages(library(svir))
set.seed(11)
n <- 500
p <- 50
q <- 5
x <- rnorm(n)
C <- matrix(rnorm(p * q, 0, 0.5), p, q)
B <- rbind(runif(p, 0, 1), runif(p, -0.5, 0.5))
W <- matrix(rnorm(n * q), n)
d <- data.frame(x = x, depth = 10 * exp(rnorm(n, 0, 0.3)))
d$Y <- matrix(rpois(n * p, d$depth * exp(cbind(1, x) %*% B + W %*% t(C))), n)
St <- tcrossprod(C)
rel <- function(S) norm(S - St, "F") / norm(St, "F")
cat(sprintf("oracle: Sigma error %.4f\n", rel(crossprod(W %*% t(C)) / n)))
tight <- svi_control(max_steps = 20000)
tight$pln_tol <- 1e-14
for (k in list(list("PLN-PCA, default tolerance", pln(rank = q), svi_control()),
               list("PLN-PCA, tolerance 1e-14", pln(rank = q), tight),
               list("factor model (residual = TRUE)", pln(rank = q, residual = TRUE), svi_control()))) {
  f <- svi_fit(Y ~ x + offset(log(depth)), d, family = k[[2]], control = k[[3]])
  cat(sprintf("%-32s ELBO %.2f, %4d iterations, %.2f s; Sigma error %.4f, max |B error| %.3f\n",
              k[[1]], f$elbo, f$steps, f$time, rel(sigma(f)), max(abs(coef(f) - B))))
}
