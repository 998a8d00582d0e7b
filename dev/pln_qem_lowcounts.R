# QEM against the variational fit for pln(rank = 2, residual = TRUE) at low counts (mean about 3):
# one seed quoted in dev/PLN.md ("QEM for rank q"). n = 200, p = 20.
# Usage: R_LIBS=<lib with svir> Rscript dev/pln_qem_lowcounts.R
suppressMessages(library(svir))
set.seed(21)
n <- 200; p <- 20; q <- 2
W <- matrix(rnorm(p * q, 0, 0.5), p); psi <- runif(p, 0.05, 0.15)
Sig <- tcrossprod(W) + diag(psi)
x <- rnorm(n)
B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sig)
depth <- 1 * exp(rnorm(n, 0, 0.3))
d <- data.frame(x = x, depth = depth)
d$Y <- matrix(rpois(n * p, depth * exp(Z)), n)
oracle <- crossprod(Z - cbind(1, x) %*% B) / n
fv <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln(rank = q, residual = TRUE))
cat("VEM", fv$steps, round(fv$elbo, 2), round(fv$time, 2), "Berr", round(max(abs(coef(fv) - B)), 3), "Sig", round(norm(sigma(fv) - Sig, "F"), 3), "oracle", round(norm(oracle - Sig, "F"), 3), "offdiag mean", round(mean(sigma(fv)[upper.tri(Sig)]), 4), round(mean(Sig[upper.tri(Sig)]), 4), "\n")
print(pln_loglik(fv, 2000))
for (K in c(8, 16, 32)) {
  fq <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln(rank = q, residual = TRUE), method = "qem", control = svi_control(K = K), seed = 1)
  cat("QEM K", K, fq$steps, round(fq$elbo, 2), round(fq$time, 2), "Berr", round(max(abs(coef(fq) - B)), 3), "Sig", round(norm(sigma(fq) - Sig, "F"), 3), "offdiag", round(mean(sigma(fq)[upper.tri(Sig)]), 4), "ess", round(median(fq$ess), 1), round(min(fq$ess), 1), "\n")
}
