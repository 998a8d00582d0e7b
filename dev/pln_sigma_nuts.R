#!/usr/bin/env Rscript
# What was tried for PLN's posterior of Sigma (issue 16, point 7), against
# the NUTS reference inst/extdata/pln-mite-nuts.rds (bench/nuts/build_pln_ref.R):
# vegan's mites, 15 species, Y ~ water + offset(log total), Sigma ~
# inverse-Wishart(p + 1, I), B flat. Variants:
#   plug-in     svir's default: the latent layer fitted with Sigma at its
#               posterior mean E[Sigma] = (C + I) / (n - d)
#   mean-field  the mean-field optimum, E[Sigma^-1]^-1 = (C + I) / (n - d + p + 1)
#               (k0 = df; q(Sigma) inverse-Wishart(n + df, (C + I) (n + df) / (n + df - d)))
#   IS-EM       the latent rows' moments by importance sampling (1000 draws a
#               row from a Gaussian moment-matched to the last weights), B
#               and Sigma = (C + I) / (n - d) from them, 40 iterations: EM
#               with an exact E step, i.e. the posterior mode of B and Sigma
#               with Z integrated out (up to Monte Carlo error)
# Prints z = (svir mean - NUTS mean) / NUTS sd for B and diag(Sigma).
# Usage: Rscript dev/pln_sigma_nuts.R [lib]
a <- commandArgs(TRUE)
if (length(a)) .libPaths(c(a[1], .libPaths()))
suppressPackageStartupMessages(library(svir))
ref <- readRDS(system.file("extdata", "pln-mite-nuts.rds", package = "svir"))
d <- svir:::svir_mite15()
Y <- unclass(d$Y)
n <- nrow(Y)
p <- ncol(Y)
X <- cbind(1, d$water)
zs <- function(B, S) {
  c(B = max(abs((B - ref$B_mean) / ref$B_sd)), Sigma = max(abs((S - ref$Sigma_mean) / ref$Sigma_sd)))
}
f <- svi_fit(Y ~ water + offset(lib), d, family = pln(globals = "bayes"))
res <- list(`plug-in` = zs(coef(f), diag(sigma(f))))
# mean-field: the prior's k0 = df in the closed form
mf_prior <- function(family, p, n, d) {
  df <- p + 1
  list(df = df, scale = 1, shape = 1, k0 = df)
}
old <- svir:::svir_pln_sigma_prior
assignInNamespace("svir_pln_sigma_prior", mf_prior, "svir")
fm <- svi_fit(Y ~ water + offset(lib), d, family = pln(globals = "bayes"))
assignInNamespace("svir_pln_sigma_prior", old, "svir")
nu <- n + p + 1
# E[Sigma] under q(Sigma) = inverse-Wishart(nu, nu K): nu K / (nu - p - 1)
res$`mean-field` <- zs(coef(fm), diag(fm$sigma) * nu / (nu - p - 1))
# IS-EM
set.seed(1)
B <- coef(f)
K <- f$sigma
Mi <- f$M
Vi <- lapply(seq_len(n), function(i) diag(f$S[i, ]^2 * 1.5, p))
XtXi <- solve(crossprod(X))
for (it in 1:40) {
  Om <- solve(K)
  Ez <- matrix(0, n, p)
  Czz <- matrix(0, p, p)
  for (i in seq_len(n)) {
    L <- t(chol(Vi[[i]]))
    e <- matrix(rnorm(1000 * p), 1000)
    z <- sweep(e %*% t(L), 2, Mi[i, ], "+")
    r <- sweep(z, 2, drop(X[i, ] %*% B))
    lw <- drop(z %*% Y[i, ]) - rowSums(exp(z + d$lib[i])) - 0.5 * rowSums((r %*% Om) * r) +
      0.5 * rowSums(e^2)
    w <- exp(lw - max(lw))
    w <- w / sum(w)
    m <- colSums(z * w)
    V <- crossprod(sweep(z, 2, m) * sqrt(w))
    Mi[i, ] <- m
    Vi[[i]] <- V * 1.2 + diag(1e-6, p)
    Ez[i, ] <- m
    Czz <- Czz + V
  }
  B <- XtXi %*% crossprod(X, Ez)
  K <- (crossprod(Ez - X %*% B) + Czz + diag(p)) / (n - 2)
}
res$`IS-EM` <- zs(B, diag(K))
out <- do.call(rbind, res)
print(round(out, 2))
cat("bars: B 0.5, Sigma 1\n")
