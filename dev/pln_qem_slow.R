# QEM for pln(rank = 1, residual = TRUE) at low counts stops before the loadings settle
# (dev/PLN.md, "QEM for rank q"): dev/pln_qem_dims.R's q = 1, seed 2 data, the
# variational fit, QEM with its own stopping rule, and QEM forced to 100 and
# 300 iterations (control$qem_min_iter, a development setting).
# Usage: R_LIBS=<lib with svir> Rscript dev/pln_qem_slow.R
suppressMessages(library(svir))
sim <- function(n, p, q, seed) {
  set.seed(seed)
  W <- matrix(rnorm(p * q, 0, 0.6 / sqrt(q)), p)
  psi <- runif(p, 0.05, 0.15)
  Sig <- tcrossprod(W) + diag(psi)
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sig)
  d <- data.frame(x = x, depth = exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rpois(n * p, d$depth * exp(Z)), n)
  list(d = d, Sig = Sig, W = W, psi = psi, B = B, oracle = crossprod(Z - cbind(1, x) %*% B) / n)
}
s <- sim(300, 40, 1, 2)
fv <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 1, residual = TRUE))
fq <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 1, residual = TRUE), method = "qem", control = svi_control(K = 16), seed = 1)
ctl <- svi_control(K = 16, max_steps = 300); 
cat("truth shared", sum(s$W^2), "psi", sum(s$psi), "\n")
for (f in list(fv, fq)) cat(f$steps, "shared", sum(f$loadings^2), "psi", sum(f$psi), "err", norm(sigma(f) - s$Sig, "F"), "Berr", max(abs(coef(f) - s$B)), "\n")
print(round(cbind(true = s$W[1:8], vem = fv$loadings[1:8] * sign(sum(fv$loadings * s$W)), qem = fq$loadings[1:8] * sign(sum(fq$loadings * s$W))), 3))
print(summary(fq$factors$sd[, 1]))
print(round(tail(fq$trace, 15)))
for (mi in c(100, 300)) {
ctl <- svi_control(K = 16, max_steps = mi); ctl$qem_min_iter <- mi
fq2 <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 1, residual = TRUE), method = "qem", control = ctl, seed = 1)
cat(mi, fq2$steps, "shared", sum(fq2$loadings^2), "psi", sum(fq2$psi), "err", norm(sigma(fq2) - s$Sig, "F"), round(fq2$elbo), "\n")
}
