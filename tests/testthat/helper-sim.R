# Simulated GLMM data shared by the engine tests.
sim_glmm <- function(family = "gaussian", n_groups = 30, n_per = 20, seed = 1,
                     beta = c(0.5, -0.4, 0.3), sd = c(0.6, 0.3), rho = 0.4,
                     sigma = 0.8, phi = 3, trials = 1, crossed = 0) {
  set.seed(seed)
  n <- n_groups * n_per
  g <- factor(rep(seq_len(n_groups), each = n_per))
  x1 <- rnorm(n)
  x2 <- runif(n, -1, 1)
  S <- diag(sd) %*% matrix(c(1, rho, rho, 1), 2) %*% diag(sd)
  b <- matrix(rnorm(n_groups * 2), n_groups) %*% chol(S)
  eta <- beta[1] + beta[2] * x1 + beta[3] * x2 + b[g, 1] + b[g, 2] * x1
  d <- data.frame(g = g, x1 = x1, x2 = x2)
  if (crossed > 0) {
    h <- factor(sample(seq_len(crossed), n, replace = TRUE))
    eta <- eta + rnorm(crossed, sd = 0.5)[h]
    d$h <- h
  }
  d$y <- switch(family,
    gaussian = eta + rnorm(n, sd = sigma),
    binomial = rbinom(n, trials, plogis(eta)),
    poisson = rpois(n, exp(eta)),
    negbin = rnbinom(n, size = phi, mu = exp(eta)))
  if (family == "binomial" && trials > 1) d$trials <- trials
  attr(d, "truth") <- list(beta = beta, sd = sd, rho = rho, sigma = sigma, phi = phi)
  d
}

# Random variational parameters of the right length for a spec and guide.
rand_vpar <- function(spec, guide, sd = 0.3, seed = 2) {
  D <- length(spec$prior_type)
  ng <- if (guide == "fullrank") D + D * (D + 1) / 2 else 2 * D
  nloc <- sum(vapply(spec$terms, function(t) {
    q <- ncol(t$Z)
    t$ngroups * (q + q * (q + 1) / 2)
  }, numeric(1)))
  set.seed(seed)
  rnorm(ng + nloc, sd = sd)
}

# Central finite differences of f at v, coordinate by coordinate.
fd_grad <- function(f, v, h = 1e-6) {
  vapply(seq_along(v), function(k) {
    v1 <- v2 <- v
    v1[k] <- v1[k] + h
    v2[k] <- v2[k] - h
    (f(v1) - f(v2)) / (2 * h)
  }, numeric(1))
}

# The one-step ELBO gradient at random variational parameters and its
# largest error against central finite differences, relative to the
# gradient's size: list(grad, err).
elbo_grad_check <- function(spec, guide, batch_size = NULL, step = 5, seed = 11) {
  ctrl <- list(guide = guide, seed = seed, threads = 1L, num_particles = 2L, stl = 0L,
               batch_size = batch_size)
  v <- rand_vpar(spec, guide)
  f <- function(v) .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, step)$elbo
  g <- .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, step)$grad
  list(grad = g, err = max(abs(fd_grad(f, v) - g)) / max(1, max(abs(g))))
}

# every family and link the engine has, with the simulator that suits it
family_cases <- list(
  list(family = gaussian(), sim = "gaussian"),
  list(family = binomial(), sim = "binomial"),
  list(family = binomial(link = "probit"), sim = "binomial"),
  list(family = binomial(link = "cloglog"), sim = "binomial"),
  list(family = poisson(), sim = "poisson"),
  list(family = negbin(), sim = "negbin")
)

# Random-intercept model with known variances: y = 2 + b_g + e, J = 30
# groups of 10, tau = sigma = 1 (in the engine's standardised units 1 /
# y_scale), pinned by priors of sd 0.002 of their value; intercept prior
# normal(0, 10). The marginal posterior of the intercept is N(post_mean,
# post_var), post_var = 1 / (sum w_j + 1/s0^2), post_mean = post_var sum w_j
# ybar_j, w_j = 1 / (tau^2 + sigma^2 / n_j).
# A Gaussian model's spec with its sds tau (one per term) and sigma pinned
# by tight normal priors, and a N(0, s0) prior on the intercept: the
# posterior of the intercept and the effects is then Gaussian and exact.
pin_variances <- function(spec, tau, sig, s0) {
  spec$prior_type[] <- 1L
  spec$prior_loc <- c(0, tau, sig)
  spec$prior_scale <- c(s0, 0.002 * tau, 0.002 * sig)
  spec$init_mu <- c(0, log(tau), log(sig))
  spec
}

normal_normal_setup <- function() {
  set.seed(12)
  J <- 30
  nj <- 10
  g <- factor(rep(seq_len(J), each = nj))
  y <- 2 + rnorm(J)[g] + rnorm(J * nj)
  b <- svir:::svir_build_spec(y ~ 1 + (1 | g), data.frame(y = y, g = g))
  spec <- b$spec
  ys <- b$info$scaling$y_scale
  tau <- 1 / ys
  sig <- 1 / ys
  s0 <- 10
  spec <- pin_variances(spec, tau, sig, s0)
  ybar <- tapply(spec$y, g, mean)
  wj <- 1 / (tau^2 + sig^2 / nj)
  post_var <- 1 / (J * wj + 1 / s0^2)
  list(spec = spec, J = J, nj = nj, tau = tau, sig = sig, ybar = ybar, post_var = post_var,
       post_mean = post_var * sum(wj * ybar))
}

# central finite differences of the PLN objective (C_svir_pln_eval_r) at
# par, in the coordinates idx
pln_fd_grad <- function(dat, par, idx, h = 1e-6) {
  J <- function(x) .Call(C_svir_pln_eval_r, dat, x)$J
  vapply(idx, function(k) {
    a <- par
    a[k] <- a[k] + h
    b <- par
    b[k] <- b[k] - h
    (J(a) - J(b)) / (2 * h)
  }, 0)
}

# A Gaussian crossed GLMM with 10 levels of 1000 rows (g2) and 2000 levels
# of 5 (g1), y ~ x + (1 | g1) + (1 | g2) (bench/datarich.R's smallest size):
# test-window.R and test-centre.R.
sim_datarich_1e4 <- function() {
  set.seed(20261204 + 1e4)
  n <- 1e4
  g1 <- factor(sample.int(2000, n, replace = TRUE))
  g2 <- factor(sample.int(10, n, replace = TRUE))
  x <- rnorm(n)
  y <- 1 + 0.5 * x + rnorm(2000, 0, 0.5)[g1] + rnorm(10, 0, 0.3)[g2] + rnorm(n)
  data.frame(y, x, g1, g2)
}

# The K-sample tree bound with K = 1 on an SVI fit kept with keep_path
# (svir_tree_bound(), its coupling anchored at the final guide's means, as
# the draws' is): the mean of the bound's draws, the draws' mean log ratio
# and the standard error of their difference.
tree_bound_vs_draws <- function(fs, reps = 4000L) {
  p <- fs$path
  ng <- nrow(p$gpar)
  gp <- fs$engine$vpar[seq_len(ng)]
  lp <- fs$engine$vpar[-seq_len(ng)]
  ctrl <- p$ctrl
  ctrl$seed <- 11
  b1 <- .Call(svir:::C_svir_tree_bound_r, p$spec, ctrl, matrix(gp), matrix(lp), matrix(gp), 1L, reps)
  lr <- fs$engine$log_ratio
  list(bound = mean(b1), draws = mean(lr),
       se = sqrt(stats::var(lr) / length(lr) + stats::var(drop(b1)) / length(b1)))
}

# The width of the last interval column of predict(fit, nd, interval =
# TRUE, allow.new.levels = TRUE) for each fit, with the same R seed.
new_level_width <- function(fits, nd) {
  vapply(fits, function(f) {
    set.seed(1)
    p <- as.matrix(predict(f, nd, allow.new.levels = TRUE, interval = TRUE))
    p[1, ncol(p)] - p[1, ncol(p) - 1L]
  }, 0)
}

# bench/datarich.R's crossed design: y ~ x + (1 | g1) + (1 | g2) with g1 and
# g2 crossed (each row's levels drawn uniformly from J1 and J2), intercept
# 0.3 (gaussian 1), x 0.5, sd(g1) 0.5, sd(g2) 0.3, sigma 1; binomial is
# Bernoulli (logit). Seed 20261204 + n, as the bench.
sim_datarich <- function(family, n, J1, J2, seed = 20261204 + n) {
  set.seed(seed)
  g1 <- factor(sample.int(J1, n, replace = TRUE), levels = seq_len(J1))
  g2 <- factor(sample.int(J2, n, replace = TRUE), levels = seq_len(J2))
  x <- rnorm(n)
  b1 <- rnorm(J1, 0, 0.5)
  b2 <- rnorm(J2, 0, 0.3)
  eta <- (if (family == "gaussian") 1 else 0.3) + 0.5 * x + b1[g1] + b2[g2]
  y <- switch(family,
    gaussian = rnorm(n, eta, 1),
    poisson = rpois(n, exp(eta)),
    binomial = rbinom(n, 1, plogis(eta)))
  data.frame(y = y, x = x, g1 = droplevels(g1), g2 = droplevels(g2))
}

# The adjusted Rand index of two labelings (Hubert and Arabie 1985): 1 for
# the same partition, about 0 for independent ones (test-mixture.R,
# bench/mixture.R).
adjusted_rand <- function(a, b) {
  tab <- table(a, b)
  c2 <- function(x) sum(x * (x - 1) / 2)
  s <- c2(tab)
  sa <- c2(rowSums(tab))
  sb <- c2(colSums(tab))
  e <- sa * sb / c2(sum(tab))
  (s - e) / ((sa + sb) / 2 - e)
}

# The parameters of single-cell-like negative binomial mixtures (the scale
# test in test-mixture.R, bench/mixture.R, bench/mixture_epoch.R): K
# clusters with shares proportional to 1..K (labels z), gene log-means
# around `base` (sd 1) with cluster noise of sd `noise`, `nup` marker genes
# per cluster raised by 2, library sizes `sf` over a tenfold range, a batch
# with gene effects `gam` (sd 0.3). The random numbers are drawn in the
# order of the runs recorded in bench/README.md.
sim_sc_params <- function(n, p, K, base, noise, nup) {
  share <- seq_len(K) / sum(seq_len(K))
  z <- sample.int(K, n, replace = TRUE, prob = share)
  mu <- matrix(rnorm(p, base, 1), K, p, byrow = TRUE) + matrix(rnorm(K * p, 0, noise), K, p)
  for (k in seq_len(K)) {
    up <- sample.int(p, nup)
    mu[k, up] <- mu[k, up] + 2
  }
  sf <- exp(runif(n, log(0.3), log(3)))
  batch <- factor(sample(c("A", "B"), n, replace = TRUE))
  list(share = share, z = z, mu = mu, sf = sf, batch = batch, gam = rnorm(p, 0, 0.3))
}
