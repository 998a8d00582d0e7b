# QEM (src/infer/svir_qem.c; issues 4 and 16): one grouping factor on the
# CPU and the device; nested and crossed factors (glmm_nest.c) on the CPU;
# full batches. See dev/QEM.md.

qem_setup <- function(family, form = y ~ x1 + x2 + (1 | g), seed = 1) {
  d <- sim_glmm(family$family, n_groups = 20, n_per = 8, seed = seed)
  b <- svir:::svir_build_spec(form, d, family = family)
  b$spec$init_mu <- svir:::svir_init_mu(b$spec, b$info)
  b$spec
}

# the engine's own output (internal units); QEM uncoupled, as svi_fit() runs it
engine <- function(spec, method, K = 32L, steps = 1500, seed = 1, ndraws = 0L) {
  .Call(C_svir_fit_r, spec,
        list(guide = "fullrank", seed = seed, threads = 1L, max_steps = steps, eval_every = 50L,
             K = K, num_particles = 8L, stl = 1L, ndraws = ndraws, backend = "cpu",
             method = method, couple = as.integer(method == "svi")))
}

for (fam in list(gaussian(), poisson(), binomial())) {
  test_that(paste("QEM and full-rank SVI agree on a random-intercept GLMM:", fam$family), {
    spec <- qem_setup(fam)
    e <- engine(spec, "svi", steps = 10000)
    r <- engine(spec, "qem")
    expect_identical(r$stop_reason, "converged")
    sd_svi <- sqrt(diag(e$L %*% t(e$L)))
    # the posterior means, on the scale of SVI's posterior sd
    expect_lt(max(abs(r$mu - e$mu) / sd_svi), 1)
    # the traced bound: an importance-weighted bound at the end is no worse
    # than SVI's ELBO (beyond Monte Carlo noise)
    expect_gt(r$elbo_final, e$elbo_final - 2)
  })
}

test_that("svi_fit(method = 'qem') returns a complete svi_fit", {
  d <- sim_glmm("poisson", n_groups = 20, n_per = 8, seed = 3)
  fit <- svi_fit(y ~ x1 + x2 + (1 | g), d, family = poisson(), method = "qem", seed = 1,
                 control = svi_control(K = 16, ndraws = 200, progress = FALSE))
  expect_s3_class(fit, "svi_fit")
  expect_identical(fit$method, "qem")
  expect_identical(fit$backend, "cpu")
  expect_length(fixef(fit), 3)
  expect_true(all(is.finite(fixef(fit))))
  expect_equal(nrow(ranef(fit)$g), 20)
  expect_equal(nrow(as.matrix(fit)), 200)
  expect_true(is.finite(fit$khat))
  expect_output(print(summary(fit)), "qem")
  expect_output(print(fit), "(QEM)", fixed = TRUE)
  # the same answer as SVI, within the posterior's spread
  svi <- svi_fit(y ~ x1 + x2 + (1 | g), d, family = poisson(), seed = 1,
                 control = svi_control(progress = FALSE))
  se <- sqrt(diag(vcov(svi)))
  expect_lt(max(abs(fixef(fit) - fixef(svi)) / se), 1)
})

test_that("QEM's seeds reproduce", {
  spec <- qem_setup(poisson())
  a <- engine(spec, "qem", K = 8L, steps = 30, seed = 3)
  b <- engine(spec, "qem", K = 8L, steps = 30, seed = 3)
  c <- engine(spec, "qem", K = 8L, steps = 30, seed = 4)
  a$time_split <- b$time_split <- NULL
  expect_identical(a, b)
  expect_false(identical(a$mu, c$mu))
  expect_length(a$elbo, 30)
  expect_true(all(is.finite(a$elbo)))
})

test_that("QEM refuses what it cannot do, with a clear error", {
  d <- sim_glmm("poisson", n_groups = 10, n_per = 6, crossed = 4, seed = 2)
  # two crossed factors of 60 levels: one is the tree, the other has more
  # effects than the globals' level takes
  dc <- data.frame(f1 = factor(rep(1:60, each = 10)), f2 = factor(rep(1:60, times = 10)),
                   y = rpois(600, 2))
  expect_error(svi_fit(y ~ 1 + (1 | f1) + (1 | f2), dc, family = poisson(), method = "qem"),
               "at most 50", class = "svir_error")
  expect_error(svi_fit(y ~ 1 + (1 | f1) + (1 | f2), dc, family = poisson(), method = "qem"),
               "method = \"auto\"", class = "svir_error")
  # tables too large for memory: a smaller K is named
  expect_error(svi_fit(y ~ x1 + (1 | g / h), d, family = poisson(), method = "qem",
                       control = svi_control(K = 256)),
               "smaller", class = "svir_error")
  expect_error(svi_fit(y ~ x1 + (1 | g) + (1 | h), d, family = poisson(), method = "qem",
                       backend = "cuda"),
               "CPU only", class = "svir_error")
  expect_error(svi_fit(y ~ x1 + (1 | g), d, family = poisson(), method = "qem",
                       control = svi_control(batch_size = 20)),
               "batch_size", class = "svir_error")
  expect_error(svi_control(K = 1), "K", class = "svir_error")
  expect_error(svi_control(K = 1000), "at most 256", class = "svir_error")
  expect_error(svi_fit(y ~ x1 + (1 | g), d, method = "nuts"), "svi", class = "svir_error")
  # the engine refuses too, where the front door is bypassed
  b <- svir:::svir_build_spec(y ~ x1 + (1 | g) + (1 | h), d, family = poisson())
  expect_error(engine(b$spec, "qem", steps = 5), "qem_level")
  b$spec$qem_level <- c(1L, 2L) # h is not nested in g
  expect_error(engine(b$spec, "qem", steps = 5), "not nested")
})

# The plan: the longest chain of nested factors is the tree, coarsest
# first; the rest are crossed with it.
test_that("QEM's plan finds the nested chain and the crossed factors", {
  plan <- function(f, d) {
    b <- svir:::svir_build_spec(f, d)
    svir:::svir_qem_plan(b$spec, 16L)
  }
  p1 <- plan(strength ~ 1 + (1 | batch / cask), lme4::Pastes)
  # lme4 orders the terms cask:batch (30 levels), then batch (10)
  expect_identical(p1$level, c(2L, 1L))
  expect_length(p1$crossed, 0)
  p2 <- plan(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin)
  expect_identical(p2$level, c(1L, 0L)) # plate (24) is the tree, sample (6) crossed
  gt <- lme4::grouseticks
  p3 <- plan(TICKS ~ 1 + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), gt)
  expect_identical(p3$level, c(3L, 2L, 1L)) # lme4 orders INDEX, BROOD, LOCATION: LOCATION > BROOD > INDEX
  expect_equal(p3$cells, 63 * 16^2 + 118 * 16^3 + 403 * 16^4)
})

# A nested and a crossed Gaussian model with every variance pinned by a tight
# prior: the posterior of the intercept and of every effect is Gaussian and
# known exactly (Bayesian linear regression on [1, Z]). QEM's tree must
# recover it within Monte-Carlo tolerance.
nested_exact <- function(crossed) {
  set.seed(21)
  A <- 8; B <- 4; nj <- 5
  a <- factor(rep(seq_len(A), each = B * nj))
  ab <- factor(rep(seq_len(A * B), each = nj))
  h <- factor(rep(1:5, length.out = A * B * nj))
  d <- data.frame(a = a, ab = ab, h = h)
  d$y <- 1 + rnorm(A)[a] + 0.5 * rnorm(A * B)[ab] + (if (crossed) 0.7 * rnorm(5)[h] else 0) +
    rnorm(nrow(d))
  f <- if (crossed) y ~ 1 + (1 | a) + (1 | ab) + (1 | h) else y ~ 1 + (1 | a) + (1 | ab)
  b <- svir:::svir_build_spec(f, d)
  spec <- b$spec
  ys <- b$info$scaling$y_scale
  tau <- c(1, 0.5, if (crossed) 0.7) / ys
  sig <- 1 / ys
  s0 <- 10
  spec <- pin_variances(spec, tau, sig, s0)
  spec$qem_level <- svir:::svir_qem_plan(spec, 16L)$level
  # the exact posterior of (intercept, effects)
  Zs <- lapply(spec$terms, function(tm) outer(tm$group, seq_len(tm$ngroups) - 1L, `==`) * 1)
  W <- cbind(1, do.call(cbind, Zs))
  P <- diag(c(1 / s0^2, rep(1 / tau^2, vapply(Zs, ncol, 1L))))
  S <- solve(crossprod(W) / sig^2 + P)
  list(spec = spec, tau = tau, mean = drop(S %*% crossprod(W, spec$y)) / sig^2,
       sd = sqrt(diag(S)))
}

for (crossed in c(FALSE, TRUE)) {
  test_that(paste("QEM recovers the exact posterior of a", if (crossed) "nested and crossed" else "nested",
                  "normal model"), {
    ex <- nested_exact(crossed)
    r <- .Call(C_svir_fit_r, ex$spec, list(guide = "meanfield", seed = 3, threads = 1L,
                                           ndraws = 10L, max_steps = 3000, K = 16L,
                                           method = "qem", couple = 0L))
    expect_identical(r$stop_reason, "converged")
    expect_lt(abs(r$mu[1] - ex$mean[1]) / ex$sd[1], 0.3)
    expect_lt(abs(exp(r$omega[1]) / ex$sd[1] - 1), 0.35)
    # every effect b = tau z: posterior means within 0.3 sds, sds within 35%
    bm <- unlist(Map(function(m, t) t * m[, 1], r$m, ex$tau))
    expect_lt(max(abs(bm - ex$mean[-1]) / ex$sd[-1]), 0.3)
  })
}

# The sums' shortcut of the nested tree (random intercepts, Gaussian or
# Poisson) against evaluating every observation: the same fit.
test_that("QEM's nested tree gives the same fit with and without its sums", {
  d <- lme4::grouseticks
  d$cHEIGHT <- d$HEIGHT - mean(d$HEIGHT)
  for (fam in list(poisson(), gaussian())) {
    f <- if (fam$family == "poisson") TICKS ~ cHEIGHT + (1 | LOCATION / BROOD) else
      log1p(TICKS) ~ cHEIGHT + (1 | LOCATION / BROOD) + (1 | YEAR)
    b <- svir:::svir_build_spec(f, d, family = fam)
    spec <- b$spec
    spec$init_mu <- svir:::svir_init_mu(spec, b$info)
    spec$qem_level <- svir:::svir_qem_plan(spec, 8L)$level
    ctrl <- list(guide = "fullrank", seed = 4, threads = 2L, ndraws = 10L, K = 8L,
                 max_steps = 20L, method = "qem", couple = 0L)
    r0 <- .Call(C_svir_fit_r, spec, ctrl)
    r1 <- .Call(C_svir_fit_r, spec, c(ctrl, qem_direct = 1L))
    expect_equal(r0$elbo, r1$elbo, tolerance = 1e-9, info = fam$family)
    expect_equal(r0$mu, r1$mu, tolerance = 1e-9, info = fam$family)
    expect_equal(r0$m, r1$m, tolerance = 1e-9, info = fam$family)
  }
})

# Random-intercept model with known variances (pinned by tight priors, as in
# test-exact.R): the posterior of the intercept and of every group's effect
# is Gaussian and known exactly. QEM must recover it within Monte-Carlo
# tolerance; its proposal is not coupled, yet the importance weights over
# the joint draws give the intercept its full spread, which uncoupled SVI
# cannot (test-exact.R).
test_that("QEM recovers the exact normal-normal posterior", {
  nn <- normal_normal_setup()
  spec <- nn$spec
  post_mean <- nn$post_mean
  post_var <- nn$post_var
  tau <- nn$tau
  sig <- nn$sig
  nj <- nn$nj
  ybar <- nn$ybar
  # b_j | beta, y ~ N(k (ybar_j - beta), k sig^2 / nj), k = nj tau^2 / (nj tau^2 + sig^2)
  k <- nj * tau^2 / (nj * tau^2 + sig^2)
  b_mean <- k * (ybar - post_mean)
  b_sd <- sqrt(k * sig^2 / nj + k^2 * post_var)
  r <- .Call(C_svir_fit_r, spec, list(guide = "meanfield", seed = 3, threads = 1L, ndraws = 10L,
                                      max_steps = 3000, K = 32L, method = "qem",
                                      couple = 0L))
  expect_identical(r$stop_reason, "converged")
  expect_lt(abs(r$mu[1] - post_mean) / sqrt(post_var), 0.3)
  expect_lt(abs(exp(r$omega[1]) / sqrt(post_var) - 1), 0.35)
  # the groups' effects b_j = tau z_j (sd pinned at tau)
  expect_lt(max(abs(tau * r$m[[1]][, 1] - b_mean) / b_sd), 0.3)
})

# The paper's reparameterisation test: rescale one latent by 1000 (its
# covariate divided by 1000, its prior scale and start multiplied by 1000).
# QEM's moment matching is affine-equivariant, so its trajectory in the
# original units is unchanged (up to rounding); SVI's Adam moves every
# parameter by about its step size per step, so the rescaled coefficient
# crawls.
test_that("QEM is unchanged by rescaling a latent; SVI is slowed", {
  d <- sim_glmm("poisson", n_groups = 20, n_per = 8, seed = 5)
  b <- svir:::svir_build_spec(y ~ x1 + x2 + (1 | g), d, family = poisson())
  spec <- b$spec
  D <- length(spec$prior_type)
  spec$init_mu <- svir:::svir_init_mu(spec, b$info)
  spec$init_mu[2] <- 1 # x1's coefficient starts far from its posterior (about -0.33)
  spec$init_sd <- rep(1, D)
  scaled <- spec
  scaled$X[, 2] <- spec$X[, 2] / 1000
  scaled$prior_loc[2] <- spec$prior_loc[2] * 1000
  scaled$prior_scale[2] <- spec$prior_scale[2] * 1000
  scaled$init_mu[2] <- spec$init_mu[2] * 1000
  scaled$init_sd[2] <- 1000
  ctrl <- list(guide = "meanfield", seed = 7, threads = 1L, ndraws = 10L, K = 16L,
               max_steps = 60, eval_every = 1000L, num_particles = 1L, stl = 1L)
  unscale <- function(r) c(r$mu[2] / 1000, exp(r$omega[2]) / 1000)
  q0 <- .Call(C_svir_fit_r, spec, c(ctrl, method = "qem", couple = 0L))
  q1 <- .Call(C_svir_fit_r, scaled, c(ctrl, method = "qem", couple = 0L))
  expect_equal(unscale(q1), c(q0$mu[2], exp(q0$omega[2])), tolerance = 1e-6)
  expect_equal(q1$mu[-2], q0$mu[-2], tolerance = 1e-6)
  expect_equal(q1$elbo, q0$elbo, tolerance = 1e-6)
  expect_lt(q0$mu[2], 0) # it moved from 1 to the other side of 0
  # SVI, 300 steps from the same start: the unscaled run reaches the
  # posterior, the rescaled one has barely moved
  ctrl$max_steps <- 300
  s0 <- .Call(C_svir_fit_r, spec, c(ctrl, method = "svi"))
  s1 <- .Call(C_svir_fit_r, scaled, c(ctrl, method = "svi"))
  post_sd <- exp(q0$omega[2])
  # the answer: SVI run to convergence on the original scale
  ref <- .Call(C_svir_fit_r, spec, list(guide = "meanfield", seed = 1, threads = 1L,
                                        ndraws = 10L, method = "svi"))$mu[2]
  # the start is many posterior sds from it: QEM's 60 iterations reach it on
  # either scale; SVI's 300 steps go most of the way on the original scale
  # and hardly move on the rescaled one
  expect_gt(abs(1 - ref) / post_sd, 8)
  expect_lt(abs(q1$mu[2] / 1000 - ref) / post_sd, 1)
  expect_lt(abs(s0$mu[2] - ref), abs(1 - ref) / 3)
  expect_gt(abs(s1$mu[2] / 1000 - ref) / post_sd, 8)
})

# The tree bound (svir_tree_bound() in src/svir_qem.c) that bench/qem.R uses
# as its yardstick, checked against independent code: with K = 1 its mean is
# the ELBO, which the posterior draws kept in an SVI fit estimate through the
# engine's own pass (coupled guide included); at QEM's K on QEM's final
# proposal it is what QEM traced; and it grows with K.
test_that("the tree bound agrees with the ELBO and with QEM's trace", {
  d <- sim_glmm("poisson", n_groups = 20, n_per = 8, seed = 5)
  f <- y ~ x1 + x2 + (1 | g)
  fs <- svi_fit(f, d, family = poisson(), seed = 2,
                control = svi_control(keep_path = 50L, ndraws = 4000L, threads = 1L))
  p <- fs$path
  expect_identical(p$ctrl$method, "svi")
  expect_equal(dim(p$gpar), c(length(fs$engine$vpar) - nrow(p$lpar), length(p$step)))
  expect_true(all(diff(p$step) == 50) && all(diff(p$time) >= 0))
  # the final guide (its coupling anchored at its means, as the draws were)
  tb <- tree_bound_vs_draws(fs)
  expect_lt(abs(tb$bound - tb$draws), 4 * tb$se)
  # the bound grows with K (same random numbers along the path)
  last <- length(p$step)
  bk <- vapply(c(1L, 4L, 32L), function(K)
    svir:::svir_path_bound(fs, K = K, reps = 16L, which = last)$bound, 0)
  expect_true(bk[1] < bk[2] && bk[2] < bk[3])
  # QEM: its trace at the end against the bound on its final proposal
  fq <- svi_fit(f, d, family = poisson(), method = "qem", seed = 2,
                control = svi_control(K = 16L, keep_path = 1L, threads = 1L))
  expect_identical(fq$path$ctrl$couple, 0L)
  expect_equal(fq$path$step[length(fq$path$step)], fq$steps)
  bq <- svir:::svir_path_bound(fq, K = 16L, reps = 64L, which = fq$steps)
  tail_trace <- utils::tail(fq$engine$elbo, 20)
  expect_lt(abs(bq$bound - mean(tail_trace)),
            4 * sqrt(bq$se^2 + stats::var(tail_trace) / 20) + 0.05)
  expect_error(svir:::svir_path_bound(svi_fit(f, d, family = poisson(), seed = 2)),
               "kept no path")
  expect_error(svi_control(keep_path = -1), "keep_path")
})

# The tree's sufficient-sum paths (Gaussian with any q, Poisson random
# intercepts) against evaluating every observation, on the same draws.
test_that("QEM's sum paths give the tree of the observation-by-observation pass", {
  cases <- list(
    list(f = y ~ x1 + (1 + x2 | g), fam = "gaussian"),
    list(f = y ~ x1 + (1 | g), fam = "gaussian"),
    list(f = y ~ x1 + x2 + (1 | g), fam = "poisson"))
  for (cs in cases) {
    d <- sim_glmm(cs$fam, n_groups = 12, n_per = 7, seed = 9)
    b <- svir:::svir_build_spec(cs$f, d, family = get(cs$fam)())
    spec <- b$spec
    spec$init_mu <- svir:::svir_init_mu(spec, b$info)
    ctrl <- list(guide = "fullrank", seed = 4, threads = 1L, ndraws = 10L, K = 8L,
                 max_steps = 30L, keep_path = 10L, method = "qem", couple = 0L)
    r <- .Call(C_svir_fit_r, spec, ctrl)
    p <- r$path
    direct <- .Call(C_svir_tree_bound_r, spec, c(ctrl, qem_direct = 1L), p$gpar, p$lpar,
                    p$anchor, 8L, 3L)
    sums <- .Call(C_svir_tree_bound_r, spec, ctrl, p$gpar, p$lpar, p$anchor, 8L, 3L)
    expect_equal(sums, direct, tolerance = 1e-10, info = cs$fam)
    # and whole fits take the same path
    r1 <- .Call(C_svir_fit_r, spec, c(ctrl, qem_direct = 1L))
    expect_equal(r$elbo, r1$elbo, tolerance = 1e-8, info = cs$fam)
    expect_equal(r$mu, r1$mu, tolerance = 1e-8, info = cs$fam)
  }
})
