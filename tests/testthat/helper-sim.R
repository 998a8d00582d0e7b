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

# every family and link the engine has, with the simulator that suits it
family_cases <- list(
  list(family = gaussian(), sim = "gaussian"),
  list(family = binomial(), sim = "binomial"),
  list(family = binomial(link = "probit"), sim = "binomial"),
  list(family = binomial(link = "cloglog"), sim = "binomial"),
  list(family = poisson(), sim = "poisson"),
  list(family = negbin(), sim = "negbin")
)
