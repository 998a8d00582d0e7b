# QEM prototype in plain R (issue 4 groundwork; not part of the package).
# Gaussian random-intercept model on lme4::sleepstudy,
#   Reaction = b0 + b1 Days + sd z_j + e,  z_j ~ N(0, 1),  e ~ N(0, sigma^2),
# globals theta = (b0, b1, log sd, log sigma) with wide priors, locals z_j.
# One QEM iteration: K draws of theta and K draws of every z_j from the
# current proposal; per group the K x K table of log f_j(k0, kj) = log p(y_j,
# z_j | theta_k0) - log q(z_j); the tree's log-sum-exps give log P-hat, the
# weights w0(k0) of the globals and the groups' marginals; the M-step matches
# first and second moments, smoothed by an exponential moving average with
# step eta0 (t + 1)^-kappa. With couple = TRUE the proposal of z_j given theta
# is shifted as svir's coupled SVI guide shifts it (z = z~ - (b0 - c) / sd),
# so that the fixed intercept cancels from the likelihood.
# Run: Rscript dev/qem_proto.R  (about a minute). See dev/QEM.md.
suppressMessages(library(lme4))
d <- sleepstudy; y <- d$Reaction; X <- cbind(1, d$Days); g <- as.integer(d$Subject); J <- max(g)
lse <- function(x) { m <- max(x); m + log(sum(exp(x - m))) }
qem <- function(K = 16, iters = 300, eta0 = 1, kappa = 0.6, init_sd = 1, seed = 1, floor = 1e-8, couple = TRUE) {
  set.seed(seed)
  D <- 4
  mu <- c(mean(y), 0, log(sd(y)/2), log(sd(y)/2)); s2 <- rep(init_sd^2, D)
  M1 <- mu; M2 <- s2 + mu^2
  zm <- rep(0, J); zs2 <- rep(1, J); Z1 <- zm; Z2 <- zs2 + zm^2
  trace <- numeric(iters); cref <- mu[1]
  for (t in 0:(iters - 1)) {
    th <- matrix(rnorm(K * D), K) * rep(sqrt(s2), each = K) + rep(mu, each = K)
    lq0 <- rowSums(dnorm(th, rep(mu, each = K), rep(sqrt(s2), each = K), log = TRUE))
    lp0 <- rowSums(dnorm(th[, 1:2, drop = FALSE], 0, 1000, log = TRUE)) + dnorm(exp(th[, 3]), 0, 100, log = TRUE) + th[, 3] + dnorm(exp(th[, 4]), 0, 100, log = TRUE) + th[, 4]
    z <- matrix(rnorm(J * K), J) * sqrt(zs2) + zm           # J x K
    lqz <- dnorm(z, zm, sqrt(zs2), log = TRUE)
    lf <- array(0, c(J, K, K))                                # j, k0, kj
    for (k0 in 1:K) {
      lin <- drop(X %*% th[k0, 1:2]); sdk <- exp(th[k0, 3]); sig <- exp(th[k0, 4])
      zz <- if (couple) z - (th[k0, 1] - cref) / sdk else z   # the coupled proposal
      lpz <- dnorm(zz, log = TRUE)
      for (kj in 1:K) {
        ll <- dnorm(y, lin + sdk * zz[g, kj], sig, log = TRUE)
        lf[, k0, kj] <- rowsum(ll, g)[, 1] + lpz[, kj] - lqz[, kj]
      }
    }
    lm <- apply(lf, c(1, 2), lse) - log(K)                     # J x K (k0)
    lw0 <- lp0 - lq0 + colSums(lm)
    trace[t + 1] <- lse(lw0) - log(K)
    w0 <- exp(lw0 - lse(lw0))
    E1 <- colSums(w0 * th); E2 <- colSums(w0 * th^2)
    # group marginals
    pz <- matrix(0, J, K)
    for (k0 in 1:K) pz <- pz + w0[k0] * exp(lf[, k0, ] - (lm[, k0] + log(K)))
    Ez1 <- rowSums(pz * z); Ez2 <- rowSums(pz * z^2)
    eta_t <- eta0 * (t + 1)^(-kappa); eta_t <- min(eta_t, 1)
    M1 <- (1 - eta_t) * M1 + eta_t * E1; M2 <- (1 - eta_t) * M2 + eta_t * E2
    Z1 <- (1 - eta_t) * Z1 + eta_t * Ez1; Z2 <- (1 - eta_t) * Z2 + eta_t * Ez2
    mu <- M1; s2 <- pmax(M2 - M1^2, floor); zm <- Z1; zs2 <- pmax(Z2 - Z1^2, floor)
  }
  list(mu = mu, sd = sqrt(s2), trace = trace)
}
f <- lmer(Reaction ~ Days + (1 | Subject), d, REML = FALSE)
cat("lmer: ", fixef(f), log(as.data.frame(VarCorr(f))$sdcor), "\n")
for (cfg in list(list(K=16, couple=FALSE), list(K=16), list(K=8), list(K=32), list(K=16, kappa=0.8),
                 list(K=16, iters=1000), list(K=64, couple=FALSE),
                 list(K=16, couple=FALSE, init_sd=0.1))) {
  r <- do.call(qem, cfg)
  it <- if (is.null(cfg$iters)) 300 else cfg$iters
  cat(sprintf("K=%d couple=%s kappa=%s iters=%d init_sd=%s: mu %s  sd %s  logP last10%% %.2f @25 %.2f @50 %.2f @100 %.2f\n", cfg$K, format(!isFALSE(cfg$couple)), format(if (is.null(cfg$kappa)) 0.6 else cfg$kappa), it,
      format(if (is.null(cfg$init_sd)) 1 else cfg$init_sd),
      paste(round(r$mu, 3), collapse = " "), paste(signif(r$sd, 2), collapse = " "), mean(tail(r$trace, it/10)), mean(r$trace[21:30]), mean(r$trace[41:60]), mean(r$trace[91:110])))
}
