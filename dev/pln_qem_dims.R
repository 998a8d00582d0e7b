# Where QEM for pln(rank = q, residual = TRUE) works (issue 5, point 3): for latent
# dimensions q = 1, 2, 4, 8 and K = 16, 64 samples per latent, on simulated
# data (n = 300 rows, p = 40 columns, mean counts about 3, Sigma = W W' +
# diag(psi) of rank q), the rows' effective sample sizes at the end
# (median and 10% quantile of the ESS over the K samples of u_i), the error
# of Sigma (Frobenius) for QEM and for the variational fit against the
# oracle (the covariance of the true latent residuals), and the times.
# Usage: R_LIBS=<lib with svir> Rscript dev/pln_qem_dims.R [seeds]
suppressPackageStartupMessages(library(svir))
args <- commandArgs(trailingOnly = TRUE)
seeds <- if (length(args)) seq_len(as.integer(args[1])) else 1:2
sim <- function(n, p, q, seed) {
  set.seed(seed)
  W <- matrix(rnorm(p * q, 0, 0.6 / sqrt(q)), p)
  Sig <- tcrossprod(W) + diag(runif(p, 0.05, 0.15))
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sig)
  d <- data.frame(x = x, depth = exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rpois(n * p, d$depth * exp(Z)), n)
  list(d = d, Sig = Sig, oracle = crossprod(Z - cbind(1, x) %*% B) / n)
}
rows <- list()
for (q in c(1, 2, 4, 8)) for (seed in seeds) {
  s <- sim(300, 40, q, seed)
  fv <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = q, residual = TRUE))
  for (K in c(16, 64)) {
    fq <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = q, residual = TRUE), method = "qem",
                  control = svi_control(K = K), seed = seed)
    rows[[length(rows) + 1]] <- data.frame(
      q = q, seed = seed, K = K, iterations = fq$steps,
      ess_median = stats::median(fq$ess) / K, ess_q10 = stats::quantile(fq$ess, 0.1) / K,
      err_qem = norm(sigma(fq) - s$Sig, "F"), err_vem = norm(sigma(fv) - s$Sig, "F"),
      err_oracle = norm(s$oracle - s$Sig, "F"), time_qem = fq$time, time_vem = fv$time)
  }
}
res <- do.call(rbind, rows)
rownames(res) <- NULL
print(format(res, digits = 3), row.names = FALSE)
cat("\nmedians over seeds:\n")
agg <- aggregate(cbind(ess_median, ess_q10, err_qem, err_vem, err_oracle, time_qem, time_vem) ~ q + K,
                 res, stats::median)
print(format(agg, digits = 3), row.names = FALSE)
