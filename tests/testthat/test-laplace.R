# method = "laplace" (R/laplace.R, src/models/glmm/glmm_laplace.c): the
# Laplace step's density, mode and marginal against independent code, its
# exactness for Gaussian models, the whole posterior against an exact one
# computed by quadrature, and the default's choice of method.

# A Gaussian random-intercept model in the engine's units, with normal
# priors on the fixed effect (so that the latent field is Gaussian).
lap_spec <- function(J = 8, nj = 5, seed = 3) {
  set.seed(seed)
  g <- rep(seq_len(J), each = nj)
  n <- length(g)
  y <- 0.4 + rnorm(J, sd = 0.7)[g] + rnorm(n, sd = 0.5)
  list(y = y, trials = NULL, offset = NULL, X = matrix(1, n, 1), family = 0L, link = 0L,
       terms = list(list(group = as.integer(g - 1L), ngroups = as.integer(J),
                         Z = matrix(1, n, 1), correlated = FALSE)),
       prior_type = c(1L, 1L, 1L), prior_df = c(1, 1, 1), prior_loc = c(0.2, 0, 0),
       prior_scale = c(2, 1, 1), init_mu = c(0, 0, 0))
}

# log N(y; m0 1, tau^2 Z Z' + sigma^2 I + s0^2 1 1') + the half-normal priors
# of tau and sigma with the log-Jacobians of their log scale
lap_exact_logp <- function(spec, th) {
  tau <- exp(th[2])
  sig <- exp(th[3])
  g <- spec$terms[[1]]$group
  n <- length(spec$y)
  V <- tau^2 * outer(g, g, "==") + sig^2 * diag(n) + spec$prior_scale[1]^2
  R <- chol(V)
  r <- backsolve(R, spec$y - spec$prior_loc[1], transpose = TRUE)
  ll <- -0.5 * sum(r^2) - sum(log(diag(R))) - 0.5 * n * log(2 * pi)
  hn <- function(x, s) log(2) + stats::dnorm(x, 0, s, log = TRUE) + log(x)
  ll + hn(tau, spec$prior_scale[2]) + hn(sig, spec$prior_scale[3])
}

test_that("the Laplace step's log density is the model's joint density", {
  d <- sim_glmm("poisson", n_groups = 12, n_per = 6, seed = 2)
  b <- svir:::svir_build_spec(y ~ x1 + (x1 | g), d, family = poisson())
  spec <- b$spec
  D <- length(spec$prior_type)
  set.seed(1)
  th <- rnorm(D, sd = 0.3)
  z <- matrix(rnorm(12 * 2), 12, 2)
  lj <- .Call(svir:::C_svir_logdensity_r, spec, th, list(z))$logp
  # b = A z with A = diag(sd) L
  sd <- exp(th[3:4])
  A <- diag(sd) %*% svir:::svir_cpc_to_chol(th[5], 2)
  u <- c(th[1:2], as.vector(t(z %*% t(A))))
  lf <- .Call(svir:::C_svir_lap_logf_r, spec, th, u)
  # the density of b is that of z over |det A| per group
  expect_equal(lf + 12 * sum(log(diag(A))), lj, tolerance = 1e-10)
})

test_that("Newton's mode is the conditional mode for each family", {
  cases <- list(
    list(f = y ~ x1 + (x1 | g), fam = poisson(), sim = "poisson"),
    list(f = cbind(y, trials - y) ~ x1 + (1 | g), fam = binomial(), sim = "binomial"),
    list(f = y ~ x1 + (1 | g), fam = negbin(), sim = "negbin"))
  for (cs in cases) {
    d <- sim_glmm(cs$sim, n_groups = 10, n_per = 8, seed = 4, trials = 5)
    spec <- svir:::svir_build_spec(cs$f, d, family = cs$fam)$spec
    D <- length(spec$prior_type)
    p <- ncol(spec$X)
    nz <- sum(vapply(spec$terms, function(tm) tm$ngroups * NCOL(tm$Z), 0))
    th <- c(rep(0, p), rep(-0.5, D - p))
    m <- .Call(svir:::C_svir_lap_mode_r, spec, th, rep(0, p + nz))
    expect_true(m$ok)
    negf <- function(u) -.Call(svir:::C_svir_lap_logf_r, spec, th, u)
    o <- stats::optim(m$u, negf, method = "BFGS", control = list(reltol = 1e-14, maxit = 5000))
    # the optimiser cannot improve on it, and lands on it from there
    expect_gte(-negf(m$u), -o$value - 1e-8)
    expect_lt(max(abs(o$par - m$u)), 1e-3)
  }
})

test_that("the negative binomial's Laplace step uses the observed information", {
  # the counts of an SBC replicate (bench/sbc.R's design, phi 2.9) whose
  # start, phi = 0.17, left counts in the hundreds far above their means:
  # with Fisher's information Newton's steps overshot and no mode was found
  # ("initial value in 'vmmin' is not finite", 2 fits in 500)
  set.seed(4e6 + 418)
  th_true <- c(rnorm(1), rnorm(1), abs(rnorm(1, 0, 0.5)), rexp(1, 0.1))
  g <- factor(rep(1:12, each = 6))
  x <- rnorm(72)
  x <- x - mean(x)
  z <- rnorm(12)
  y <- rnbinom(72, size = th_true[4], mu = exp(th_true[1] + th_true[2] * x + th_true[3] * z[g]))
  d <- data.frame(y = y, x = x, g = g)
  pr <- svi_prior(intercept = normal(0, 1), b = normal(0, 1), sd = half_normal(0.5),
                  phi = exponential(0.1))
  spec <- svir:::svir_build_spec(y ~ x + (1 | g), d, family = negbin(), prior = pr)$spec
  th <- c(2.5, -0.57, log(0.5), log(0.17))
  m <- .Call(svir:::C_svir_lap_mode_r, spec, th, rep(0, 14))
  expect_true(m$ok)
  # the marginal is f(mode) + d/2 log(2 pi) - log det(H)/2 with H the
  # observed negative Hessian of log f at the mode (numerically here)
  negf <- function(u) -.Call(svir:::C_svir_lap_logf_r, spec, th, u)
  H <- stats::optimHess(m$u, negf)
  lap <- -negf(m$u) + 7 * log(2 * pi) - 0.5 * determinant(H)$modulus
  expect_equal(m$logp, as.numeric(lap), tolerance = 1e-5)
  fit <- svi_fit(y ~ x + (1 | g), d, family = negbin(), prior = pr, seed = 418)
  expect_identical(fit$method, "laplace")
  expect_true(all(is.finite(coef(summary(fit))[, "Estimate"])))
})

test_that("the Laplace marginal of a Gaussian model is its exact marginal", {
  spec <- lap_spec()
  for (th in list(c(0, -0.3, -0.7), c(0, 0.5, -1.2), c(0, -2, 0.3))) {
    m <- .Call(svir:::C_svir_lap_mode_r, spec, th, rep(0, 9))
    expect_equal(m$logp, lap_exact_logp(spec, th), tolerance = 1e-9)
  }
  # and the joint importance ratios equal the marginal ones (the Gaussian
  # conditional is exact), for every draw
  r <- .Call(svir:::C_svir_lap_is_r, spec, c(0, -0.3, -0.7), rep(0, 9), diag(2) * 0.3, 5L, 50L,
             0, 1, 1L)
  expect_true(all(r$ok))
  expect_equal(r$logw, r$logw_marginal, tolerance = 1e-8)
})

test_that("method = 'laplace' gives the exact posterior of a small Gaussian model", {
  # exact posterior by quadrature over (log tau, log sigma): the marginal
  # likelihood is Gaussian, the intercept given them is Gaussian too
  J <- 8
  nj <- 3
  set.seed(11)
  g <- factor(rep(seq_len(J), each = nj))
  y <- 1 + rnorm(J, sd = 0.6)[g] + rnorm(J * nj, sd = 0.8)
  d <- data.frame(y = y, g = g)
  pri <- svi_prior(intercept = normal(1, 3), sd = half_normal(1), sigma = half_normal(2))
  fit <- svi_fit(y ~ 1 + (1 | g), d, prior = pri, method = "laplace", seed = 5,
                 control = svi_control(ndraws = 4000L, is_draws = 8000L))
  expect_equal(fit$method, "laplace")
  lt <- seq(-6, 1.5, length.out = 151)
  ls <- seq(-1.5, 0.6, length.out = 121)
  gi <- as.integer(g)
  n <- length(y)
  grid <- expand.grid(lt = lt, ls = ls)
  post <- t(vapply(seq_len(nrow(grid)), function(k) {
    tau <- exp(grid$lt[k])
    sig <- exp(grid$ls[k])
    V0 <- tau^2 * outer(gi, gi, "==") + sig^2 * diag(n)
    Vi <- solve(V0)
    # the intercept given (tau, sigma): precision and mean
    prec <- sum(Vi) + 1 / 9
    mu <- (sum(Vi %*% y) + 1 / 9) / prec
    V <- V0 + 9
    R <- chol(V)
    r <- backsolve(R, y - 1, transpose = TRUE)
    lp <- -0.5 * sum(r^2) - sum(log(diag(R))) +
      stats::dnorm(tau, 0, 1, log = TRUE) + stats::dnorm(sig, 0, 2, log = TRUE) +
      grid$lt[k] + grid$ls[k]
    c(lp = lp, tau = tau, sig = sig, mu = mu, v = 1 / prec)
  }, numeric(5)))
  w <- exp(post[, "lp"] - max(post[, "lp"]))
  w <- w / sum(w)
  ex_mean <- c(mu = sum(w * post[, "mu"]), tau = sum(w * post[, "tau"]), sig = sum(w * post[, "sig"]))
  ex_sd <- c(mu = sqrt(sum(w * (post[, "v"] + post[, "mu"]^2)) - ex_mean[["mu"]]^2),
             tau = sqrt(sum(w * post[, "tau"]^2) - ex_mean[["tau"]]^2),
             sig = sqrt(sum(w * post[, "sig"]^2) - ex_mean[["sig"]]^2))
  dr <- as.matrix(fit)
  got_mean <- c(mean(dr[, "(Intercept)"]), mean(dr[, "sd_g__(Intercept)"]), mean(dr[, "sigma"]))
  got_sd <- c(sd(dr[, "(Intercept)"]), sd(dr[, "sd_g__(Intercept)"]), sd(dr[, "sigma"]))
  expect_lt(max(abs(got_mean - ex_mean) / ex_sd), 0.1)
  expect_lt(max(abs(got_sd / ex_sd - 1)), 0.1)
  # the summaries report the same draws
  s <- summary(fit)
  expect_equal(s$fixed["(Intercept)", "Estimate"], got_mean[1])
  expect_lt(fit$khat, 0.5)
})

test_that("the default chooses the Laplace sampler for small models and says why", {
  fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 1)
  expect_identical(fit$method, "laplace")
  expect_match(fit$method_reason, "small enough")
  out <- paste(capture.output(summary(fit)), collapse = "\n")
  expect_match(out, "Method: laplace")
  expect_match(out, "random effects integrated out, so not parameterised")
  expect_match(out, "Chosen by method = \"auto\"")
  expect_match(out, "importance draws")
  # a guide, zero inflation, minibatches or a kept path mean SVI
  g <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 1, guide = "meanfield")
  expect_identical(g$method, "svi")
  expect_match(g$method_reason, "guide")
  expect_output(print(summary(g)), "for a term of several columns, A = D L, D = diag(sd)), lambda: Subject",
                fixed = TRUE)
  b <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 1,
               control = svi_control(batch_size = 60))
  expect_identical(b$method, "svi")
  z <- suppressWarnings(svi_fit(count ~ mined + (1 | site), glmmTMB::Salamanders, family = poisson(),
                                ziformula = ~1, seed = 1))
  expect_identical(z$method, "svi")
  expect_match(z$method_reason, "zero inflation")
  # a response at one edge everywhere: SVI (the Laplace proposal's k-hat is above 1 there)
  d0 <- data.frame(y = 0L, g = factor(rep(1:10, 10)), x = rnorm(100))
  e <- suppressWarnings(svi_fit(y ~ x + (1 | g), d0, family = poisson(), seed = 1))
  expect_identical(e$method, "svi")
  expect_match(e$method_reason, "one edge")
  # above the size limit
  old <- options(svir.laplace_max_flops = 1e3)
  on.exit(options(old))
  s <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 1)
  expect_identical(s$method, "svi")
  expect_match(s$method_reason, "too large")
})

test_that("method = 'laplace' refuses what it cannot fit", {
  expect_error(svi_fit(Reaction ~ Days + (1 | Subject), lme4::sleepstudy, method = "laplace",
                       control = svi_control(batch_size = 50)), "batch_size", class = "svir_error")
  expect_error(svi_fit(count ~ mined + (1 | site), glmmTMB::Salamanders, family = poisson(),
                       ziformula = ~1, method = "laplace"), "zero inflation", class = "svir_error")
  expect_error(svi_fit(Reaction ~ Days + (1 | Subject), lme4::sleepstudy, method = "nope"),
               "method", class = "svir_error")
})

test_that("a Laplace fit's methods read its draws", {
  fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 2)
  re <- ranef(fit)$Subject
  pv <- attr(re, "postVar")
  expect_identical(dim(pv), c(2L, 2L, 18L))
  expect_true(all(pv[1, 1, ] > 0 & pv[2, 2, ] > 0))
  bd <- svir:::svir_laplace_b_draws(fit, 1)
  expect_equal(unname(re[, "Days"]), unname(colMeans(bd[[2]])))
  expect_equal(unname(sqrt(pv[2, 2, ])), unname(apply(bd[[2]], 2, sd)))
  # predictions with the random effects: the draws' mean is near the plug-in
  pe <- predict(fit)
  pd <- svir:::svir_eta_draws(fit, svir:::svir_design(fit),
                              seq_len(200))
  expect_lt(max(abs(rowMeans(pd) - pe)), 3)
  expect_equal(sigma(fit), mean(as.matrix(fit)[, "sigma"]))
  expect_true(all(is.finite(vcov(fit))))
})

test_that("a Laplace fit with unreliable weights warns and says what to try", {
  expect_warning(svir:::svir_laplace_finish(list(re = list()),
                                            list(laplace = list(weighting = "joint", khat = 1.2))),
                 "unreliable.*k-hat 1.2")
  expect_warning(svir:::svir_laplace_finish(list(re = list()),
                                            list(laplace = list(weighting = "marginal", khat = 2,
                                                                khat_marginal = 0.3))), NA)
  out <- svir:::svir_trust_advice(0.9, "svi")
  expect_match(out, "method = \"laplace\"")
  expect_match(out, "guide = \"fullrank\"")
  expect_null(svir:::svir_trust_advice(0.4, "svi"))
  # what the fit already used is not suggested again
  fr <- svir:::svir_trust_advice(0.9, "svi", guide = "fullrank")
  expect_no_match(fr, "fullrank")
  expect_match(fr, "method = \"laplace\" \\(small and medium models\\) or method = \"qem\"")
  q <- svir:::svir_trust_advice(0.9, "qem", guide = "meanfield")
  expect_no_match(q, "qem|fullrank")
})

# An effect with one level per observation (an observation-level random
# effect) is integrated out per observation by adaptive Gauss-Hermite
# quadrature inside the Laplace step (glmm_laplace.c); its draws come from
# their exact conditionals by rejection from a tangent hull.
olre_spec <- function(n = 40, seed = 5, family = poisson(), weights = NULL) {
  set.seed(seed)
  d <- data.frame(x = rnorm(n), g = factor(sample(1:6, n, TRUE)), obs = factor(seq_len(n)))
  eta <- 0.5 + 0.4 * d$x + rnorm(6, sd = 0.5)[d$g] + rnorm(n, sd = 0.6)
  f <- y ~ x + (1 | g) + (1 | obs)
  if (identical(family$family, "binomial")) {
    d$y <- rbinom(n, 10, plogis(eta - 0.5))
    f <- cbind(y, 10 - y) ~ x + (1 | g) + (1 | obs)
  } else if (identical(family$family, "negbin")) {
    d$y <- rnbinom(n, size = 3, mu = exp(eta))
  } else {
    d$y <- rpois(n, exp(eta))
  }
  b <- svir:::svir_build_spec(f, d, family = family, weights = weights)
  list(spec = b$spec, d = d)
}

olre_term <- function(spec) which(vapply(spec$terms, function(tm) tm$ngroups, 0) == length(spec$y))

# the layout of olre_spec()'s spec: p, n, the integrated term O and the
# other G, D globals, each term's first index in b (offs) and nz
olre_layout <- function(spec) {
  O <- olre_term(spec)
  sizes <- vapply(spec$terms, function(tm) tm$ngroups, 0)
  list(p = ncol(spec$X), n = length(spec$y), O = O, G = setdiff(seq_along(spec$terms), O),
       D = length(spec$prior_type), offs = cumsum(c(0, sizes)), nz = sum(sizes))
}

test_that("the Laplace step integrates out a term with one observation per level, and only then", {
  cases <- list(olre_spec()$spec, olre_spec(family = gaussian())$spec,
                olre_spec(weights = rep(c(1, 2), 20))$spec)
  off <- olre_spec()$spec
  off$lap_integrate <- FALSE
  cases[[4]] <- off
  want <- c(olre_term(cases[[1]]), 0L, 0L, 0L)
  for (k in seq_along(cases)) {
    spec <- cases[[k]]
    D <- length(spec$prior_type)
    nz <- sum(vapply(spec$terms, function(tm) tm$ngroups, 0))
    m <- .Call(svir:::C_svir_lap_mode_r, spec, rep(-0.5, D), rep(0, ncol(spec$X) + nz))
    expect_identical(m$integrated, as.integer(want[k]))
    expect_identical(svir:::svir_lap_integrated_term(spec), as.integer(want[k]))
  }
})

test_that("the integrated log density is the quadrature of the joint density", {
  cases <- list(
    list(family = poisson(), sds = c(0.3, 0.8, 1.6),
         dens = function(y, e, th, spec) stats::dpois(y, exp(e))),
    list(family = binomial(), sds = 0.8,
         dens = function(y, e, th, spec) stats::dbinom(y, 10, stats::plogis(e))),
    list(family = negbin(), sds = 0.8,
         dens = function(y, e, th, spec) stats::dnbinom(y, size = exp(th[length(th)]), mu = exp(e))))
  set.seed(3)
  for (cs in cases) {
    spec <- olre_spec(family = cs$family)$spec
    ly <- olre_layout(spec)
    list2env(ly[c("p", "n", "O", "G", "offs")], environment())
    for (sdO in cs$sds) {
      th <- c(rnorm(p, sd = 0.3), numeric(ly$D - p))
      th[p + O] <- log(sdO)
      th[p + G] <- log(0.5)
      if (ly$D > p + 2) th[ly$D] <- log(3) # negbin's log phi
      bg <- rnorm(spec$terms[[G]]$ngroups, sd = 0.5)
      # the integrated term's entries of u are ignored: give them junk
      u <- c(th[seq_len(p)], numeric(ly$nz))
      u[p + offs[G] + seq_along(bg)] <- bg
      u_junk <- u
      u_junk[p + offs[O] + seq_len(n)] <- rnorm(n)
      off <- spec
      off$lap_integrate <- FALSE
      lf_int <- .Call(svir:::C_svir_lap_logf_r, spec, th, u_junk)
      lf_plain <- .Call(svir:::C_svir_lap_logf_r, off, th, u) # effects at 0
      eta <- drop(spec$X %*% th[seq_len(p)]) + bg[spec$terms[[G]]$group + 1L]
      want <- sum(vapply(seq_len(n), function(i) {
        lik <- stats::integrate(function(v) cs$dens(spec$y[i], eta[i] + v, th, spec) *
                                  stats::dnorm(v, 0, sdO), -Inf, Inf, rel.tol = 1e-12)$value
        log(lik) - log(cs$dens(spec$y[i], eta[i], th, spec)) - stats::dnorm(0, 0, sdO, log = TRUE)
      }, 0))
      # 15 nodes, Poisson: 1e-13 at sd 0.3, 3e-7 at 0.8, 9e-5 at 1.6 over
      # the 40 observations; a Laplace approximation of each integral is
      # off by about 1e-2 per observation at sd 1.6
      expect_lt(abs(lf_int - lf_plain - want), 5e-6 * n,
                label = sprintf("%s, sd %.1f: |quadrature - integrate()|", cs$family$family, sdO))
    }
  }
})

test_that("the integrated term's draws follow their exact conditionals", {
  # sd 2 on small counts: skewed conditionals, which the Laplace Gaussian
  # misses (checked below on the same draws of everything else)
  spec <- olre_spec(n = 40, seed = 8)$spec
  ly <- olre_layout(spec)
  list2env(ly[c("p", "n", "O", "G", "offs")], environment())
  S <- 60L
  mode <- c(-0.5, 0.4, numeric(ly$D - p))
  mode[p + O] <- log(2)
  mode[p + G] <- log(0.5)
  r <- .Call(svir:::C_svir_lap_is_r, spec, mode, c(0.5, 0.4, rep(0, ly$nz)),
             diag(ly$D - p) * 0.2, 5L, S, 0, 7, 1L)
  expect_true(all(r$ok))
  set.seed(4)
  pit <- do.call(rbind, lapply(seq_len(S), function(k) {
    th <- r$theta[, k]
    sG <- exp(th[p + G])
    sO <- exp(th[p + O])
    z <- r$z[, k]
    eta <- drop(spec$X %*% th[seq_len(p)]) + sG * z[offs[G] + spec$terms[[G]]$group + 1L]
    b <- sO * z[offs[O] + spec$terms[[O]]$group + 1L]
    t(vapply(seq_len(n), function(i) {
      f <- function(v) stats::dpois(spec$y[i], exp(eta[i] + v)) * stats::dnorm(v, 0, sO)
      lf <- function(v) stats::dpois(spec$y[i], exp(eta[i] + v), log = TRUE) - v^2 / (2 * sO^2)
      # a draw from the Laplace Gaussian of the same conditional
      vh <- stats::optimize(lf, c(-20, 20), maximum = TRUE)$maximum
      bg <- stats::rnorm(1, vh, 1 / sqrt(exp(eta[i] + vh) + 1 / sO^2))
      tot <- stats::integrate(f, -Inf, Inf, rel.tol = 1e-10)$value
      c(exact = stats::integrate(f, -Inf, b[i], rel.tol = 1e-10)$value / tot,
        gauss = stats::integrate(f, -Inf, bg, rel.tol = 1e-10)$value / tot)
    }, numeric(2)))
  }))
  # uniform if the draws are exact
  expect_gt(stats::ks.test(pit[, "exact"], "punif")$p.value, 1e-3)
  expect_lt(abs(mean(pit[, "exact"]) - 0.5), 0.03)
  # the same check rejects the Laplace Gaussian's draws
  expect_lt(stats::ks.test(pit[, "gauss"], "punif")$p.value, 1e-3)
})

test_that("the Laplace step finds a mode with a large observation-level sd", {
  # the quadrature's gradient is the exact integral's, so Newton's
  # decrement stalls above zero (1e-7 at sd 2, 1e-4 at sd 3); that point is
  # the mode (it used to fail after 200 steps)
  spec <- olre_spec(n = 40, seed = 8)$spec
  ly <- olre_layout(spec)
  for (sdO in c(1, 2, 3, 5)) {
    th <- c(-0.5, 0.4, numeric(ly$D - ly$p))
    th[ly$p + ly$O] <- log(sdO)
    th[ly$p + ly$G] <- log(0.5)
    for (u0 in list(c(0.5, 0.4), c(-0.5, 0.4))) {
      m <- .Call(svir:::C_svir_lap_mode_r, spec, th, c(u0, rep(0, ly$nz)))
      expect_true(m$ok, label = sprintf("mode found at sd %g from beta0 %g", sdO, u0[1]))
      expect_lt(m$iters, 50)
    }
  }
})

test_that("the Laplace cost counts each eliminated level's distinct partner levels", {
  set.seed(2)
  n <- 300
  d <- data.frame(y = rnorm(n), a = factor(sample(40, n, TRUE)), b = factor(sample(7, n, TRUE)),
                  c = factor(sample(3, n, TRUE)))
  spec <- svir:::svir_build_spec(y ~ 1 + (1 | a) + (1 | b) + (1 | c), d, family = gaussian())$spec
  tms <- spec$terms
  E <- which.max(vapply(tms, function(tm) tm$ngroups, 0))
  len <- rep(1, tms[[E]]$ngroups)
  for (t in setdiff(seq_along(tms), E)) {
    pairs <- unique(data.frame(e = tms[[E]]$group, g = tms[[t]]$group))
    len <- len + tabulate(pairs$e + 1L, tms[[E]]$ngroups)
  }
  k <- 1 + 3
  nr <- 1 + sum(vapply(tms[-E], function(tm) tm$ngroups, 0))
  want <- n * (k^2 + 30) + sum(len^2) + nr^3 / 3
  expect_equal(svir:::svir_laplace_cost(spec)[["step"]], want)
})
