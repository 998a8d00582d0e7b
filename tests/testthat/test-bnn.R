# Bayesian neural networks (model = bnn(); src/models/bnn/, R/bnn.R).

# a small data set: two numeric inputs and a factor, each family's response
sim_bnn_data <- function(n = 40, seed = 1) {
  set.seed(seed)
  d <- data.frame(x1 = rnorm(n), x2 = runif(n, -2, 2), g = factor(sample(c("a", "b", "c"), n, TRUE)))
  eta <- sin(2 * d$x1) + 0.5 * d$x2 - 0.3 * (d$g == "b")
  d$yg <- eta + rnorm(n, sd = 0.3)
  d$yb <- rbinom(n, 1, plogis(2 * eta))
  d$yp <- rpois(n, exp(0.5 * eta))
  d
}

bnn_job <- function(formula, d, family, net, control = svi_control()) {
  svir:::svir_bnn_build(formula, d, family, net, NULL, "meanfield", "svi", control, "auto", 1,
                        na.omit, NULL)
}

# the ELBO estimate's gradient against its finite differences at a random
# guide (2 particles, step 4), relative to the gradient's size
bnn_fd_err <- function(job, seed, lsd = -1.5) {
  D <- length(job$spec$init_mu)
  set.seed(seed)
  v <- c(rnorm(D, 0, 0.5), rnorm(D, lsd, 0.3))
  ctrl <- modifyList(job$ctrl, list(num_particles = 2L, threads = 1L))
  f <- function(v) .Call(C_svir_bnn_elbo_grad_r, job$spec, ctrl, v, 4)$elbo
  g <- .Call(C_svir_bnn_elbo_grad_r, job$spec, ctrl, v, 4)$grad
  max(abs(fd_grad(f, v) - g)) / max(1, max(abs(g)))
}

# the estimate and gradient at v, step `step`, 2 particles, by path
# (spec$path), instruction set (spec$isa) and threads
bnn_run <- function(job, v, step, path, threads, isa = 0L) {
  sp <- job$spec
  sp$path <- path
  sp$isa <- isa
  .Call(C_svir_bnn_elbo_grad_r, sp, modifyList(job$ctrl, list(num_particles = 2L, threads = threads)), v, step)
}

test_that("the network's ELBO gradient matches finite differences (each activation and family)", {
  d <- sim_bnn_data()
  fams <- list(yg = gaussian(), yb = binomial(), yp = poisson())
  fml <- function(y) stats::as.formula(paste(y, "~ x1 + x2 + g"))
  for (y in names(fams)) for (act in c("relu", "tanh")) for (bs in list(NULL, 9L)) {
    job <- bnn_job(fml(y), d, fams[[y]], bnn(hidden = c(5, 3), activation = act),
                   svi_control(batch_size = bs))
    expect_lt(bnn_fd_err(job, 3), 1e-6, label = paste(y, act, if (is.null(bs)) "full" else "minibatch"))
  }
  # the other priors (the layers' precisions are parameters too)
  for (pr in c("hierarchical", "laplace")) for (y in c("yg", "yb")) {
    job <- bnn_job(fml(y), d, fams[[y]], bnn(hidden = c(5, 3), prior = pr, prior_scale = 1.5))
    expect_lt(bnn_fd_err(job, 4), 1e-6, label = paste(pr, y))
  }
  # no hidden layer: a GLM with its KL
  job <- bnn_job(yg ~ x1 + x2, d, gaussian(), bnn(hidden = integer(0)))
  expect_identical(length(job$spec$init_mu), 4L) # 2 weights, a bias, log sigma
  expect_lt(bnn_fd_err(job, 5, lsd = -1), 1e-6)
})

test_that("the tiles' paths, instruction sets and any number of lanes give the same estimate and gradient", {
  # 60 rows and 2 particles at width 300: tiles of 64 rows, so two tiles
  # whose sums are added; the products by the file's loops (path 1: the
  # machine's best kernels, AVX-512's or AVX2's where it has them), by
  # BLAS (path 2), by the baseline instruction set's loops (isa 1) or
  # AVX2's at most (isa 2), the tiles spread over 1 to 3 lanes
  d <- sim_bnn_data(n = 60)
  for (act in c("relu", "tanh")) {
    job <- bnn_job(yg ~ x1 + x2 + g, d, gaussian(), bnn(hidden = c(300, 3), activation = act))
    D <- length(job$spec$init_mu)
    set.seed(2)
    v <- c(rnorm(D, 0, 0.3), rnorm(D, -1.5, 0.3))
    run <- function(path, threads, isa = 0L) bnn_run(job, v, 4, path, threads, isa)
    ref <- run(1L, 1L)
    for (pt in list(c(2L, 1L, 0L), c(1L, 3L, 0L), c(2L, 3L, 0L), c(1L, 1L, 1L), c(1L, 2L, 1L), c(1L, 2L, 2L))) {
      got <- run(pt[1], pt[2], pt[3])
      lab <- paste(act, "path", pt[1], "lanes", pt[2], "isa", pt[3])
      expect_equal(got$elbo, ref$elbo, tolerance = 1e-12, label = lab)
      expect_equal(got$grad, ref$grad, tolerance = 1e-10, label = lab)
    }
    # and the gradient is the estimate's, across the tiles, on both paths
    for (path in 1:2) {
      job$spec$path <- path
      expect_lt(bnn_fd_err(job, 6), 1e-6, label = paste(act, "path", path))
    }
    job$spec$path <- 1L
    job$spec$isa <- 1L
    expect_lt(bnn_fd_err(job, 6), 1e-6, label = paste(act, "baseline loops"))
  }
})

test_that("one hidden layer's fused pass gives the layered passes' estimate and gradient", {
  # 61 rows and 2 particles at width 303 with 5 inputs: two tiles (the
  # second of 58 rows: whole vectors and a few rows more), the hidden
  # columns' noise 8, 4 and 1 at a time, the inputs padded to 8 columns;
  # the fused pass (path 3, on each instruction set and 1 to 3 lanes)
  # against the layered ones (loops, BLAS)
  d <- sim_bnn_data(n = 61)
  fams <- list(yg = gaussian(), yb = binomial())
  for (y in names(fams)) for (act in c("relu", "tanh")) {
    job <- bnn_job(stats::as.formula(paste(y, "~ x1 + x2 + g + I(x1 * x2)")), d, fams[[y]],
                   bnn(hidden = 303, activation = act))
    expect_identical(job$spec$d, 5L)
    D <- length(job$spec$init_mu)
    set.seed(3)
    v <- c(rnorm(D, 0, 0.3), rnorm(D, -1.5, 0.3))
    run <- function(path, threads, isa = 0L) bnn_run(job, v, 5, path, threads, isa)
    ref <- run(1L, 1L)
    for (pt in list(c(2L, 1L, 0L), c(3L, 1L, 0L), c(3L, 2L, 0L), c(3L, 3L, 0L), c(3L, 2L, 1L), c(3L, 1L, 2L),
                    c(0L, 2L, 0L))) {
      got <- run(pt[1], pt[2], pt[3])
      lab <- paste(y, act, "path", pt[1], "lanes", pt[2], "isa", pt[3])
      expect_equal(got$elbo, ref$elbo, tolerance = 1e-12, label = lab)
      expect_equal(got$grad, ref$grad, tolerance = 1e-10, label = lab)
    }
    # pre-activation variances far below float's range (sds e^-60): the
    # vector units' reciprocal square roots give way to the exact ones
    vt <- c(v[seq_len(D)], rep(-60, D))
    expect_equal(bnn_run(job, vt, 5, 3L, 2L)$grad, bnn_run(job, vt, 5, 1L, 1L, 1L)$grad, tolerance = 1e-10,
                 label = paste(y, act, "tiny variances"))
    # a different step's noise gives a different estimate (the comparison
    # above can fail)
    expect_false(isTRUE(all.equal(run(3L, 1L)$elbo, bnn_run(job, v, 6, 3L, 1L)$elbo, tolerance = 1e-12)))
    # the fused pass's gradient against finite differences, on the
    # machine's kernels and the baseline's
    job$spec$path <- 3L
    expect_lt(bnn_fd_err(job, 7), 1e-6, label = paste(y, act, "fused"))
    job$spec$isa <- 1L
    expect_lt(bnn_fd_err(job, 7), 1e-6, label = paste(y, act, "fused, baseline"))
  }
})

test_that("kl_weight tempers the weights' KL in the gradient, not in the ELBO", {
  # the gradient is linear in the weight beta: g(beta) = g_ll - beta g_kl,
  # so g(0.5) = (2/3) g(0.25) + (1/3) g(1); the ELBO does not move
  d <- sim_bnn_data()
  g <- lapply(c(0.25, 0.5, 1), function(b) {
    job <- bnn_job(yg ~ x1 + x2 + g, d, gaussian(), bnn(hidden = 6, kl_weight = b))
    D <- length(job$spec$init_mu)
    set.seed(8)
    v <- c(rnorm(D, 0, 0.5), rnorm(D, -1.5, 0.3))
    .Call(C_svir_bnn_elbo_grad_r, job$spec, modifyList(job$ctrl, list(threads = 1L)), v, 2)
  })
  expect_equal(g[[2]]$grad, 2 / 3 * g[[1]]$grad + 1 / 3 * g[[3]]$grad, tolerance = 1e-10)
  expect_false(isTRUE(all.equal(g[[2]]$grad, g[[3]]$grad)))
  expect_identical(g[[1]]$elbo, g[[3]]$elbo)
  for (bad in list(0, 1.5, NA, c(0.5, 0.5), "a")) {
    expect_error(bnn(kl_weight = bad), "kl_weight", class = "svir_error")
  }
  expect_output(print(bnn(kl_weight = 0.5)), "KL weight 0.5")
})

test_that("the ELBO of a network without hidden layers is the Bayesian linear model's", {
  # with no hidden layer the output is x'w + b: the estimate with the
  # local reparameterisation has the exact expected log-likelihood for
  # gaussian noise with sigma fixed by a tiny guide sd; compare its mean
  # over many steps with the closed form
  d <- sim_bnn_data(n = 25, seed = 4)
  job <- bnn_job(yg ~ x1 + x2, d, gaussian(), bnn(hidden = integer(0), prior_scale = 1.3, bias_scale = 0.7))
  sp <- job$spec
  D <- length(sp$init_mu)
  mu <- c(0.3, -0.2, 0.1, log(0.6))
  lsd <- c(log(0.2), log(0.3), log(0.1), log(1e-8))
  v <- c(mu, lsd)
  el <- vapply(1:4000, function(s) .Call(C_svir_bnn_elbo_grad_r, sp, job$ctrl, v, s)$elbo, 0)
  X <- cbind(sp$X, 1)
  m <- mu[1:3]
  s2 <- exp(2 * lsd[1:3])
  sig <- exp(mu[4])
  ell <- sum(-log(sig) - 0.5 * log(2 * pi) - 0.5 * ((sp$y - X %*% m)^2 + (X^2) %*% s2) / sig^2)
  tau <- c(1.3 / sqrt(2), 1.3 / sqrt(2), 0.7)
  kl <- sum(log(tau) - lsd[1:3] + (s2 + m^2) / (2 * tau^2) - 0.5)
  # log sigma's prior (half-normal on sigma) and entropy, at a point mass
  lps <- log(2) + dnorm(sig, log = TRUE) + mu[4]
  ent <- lsd[4] + 0.5 * log(2 * pi * exp(1))
  exact <- ell - kl + lps + ent
  expect_lt(abs(mean(el) - exact), 4 * sd(el) / sqrt(length(el)) + 1e-6)
})

test_that("a network fits a smooth curve, with its noise in the predictive sd", {
  set.seed(1)
  n <- 300
  d <- data.frame(x = runif(n, -3, 3))
  d$y <- 2 + 3 * sin(d$x) + rnorm(n, sd = 0.3)
  fit <- svi_fit(y ~ x, d, model = bnn(hidden = 20, activation = "tanh"), seed = 1,
                 control = svi_control(max_steps = 5000, progress = FALSE))
  expect_s3_class(fit, "svi_bnn")
  nd <- data.frame(x = seq(-2.5, 2.5, by = 0.5))
  p <- predict(fit, nd)
  # the mean within 0.15 of the truth (noise sd 0.3, 300 points), in data units
  expect_lt(max(abs(p$mean - (2 + 3 * sin(nd$x)))), 0.15)
  # a new observation's sd: the noise (0.3) and a little more
  expect_true(all(p$sd > 0.27 & p$sd < 0.45))
  expect_true(all(p$lower < p$mean & p$mean < p$upper))
  # the link scale's sd (the mean's) is smaller than a new observation's
  pl <- predict(fit, nd, type = "link")
  expect_true(all(pl$sd < p$sd))
  expect_equal(pl$mean, p$mean, tolerance = 1e-8)
  expect_output(print(fit), "1 input -> 20 -> 1, tanh")
})

test_that("a two-class network beats logistic regression on a circle", {
  set.seed(2)
  n <- 600
  d <- data.frame(x1 = runif(n, -2, 2), x2 = runif(n, -2, 2))
  d$y <- as.numeric(d$x1^2 + d$x2^2 < 1.5)
  tr <- 1:400
  te <- 401:600
  fit <- svi_fit(y ~ x1 + x2, d[tr, ], family = binomial(), model = bnn(hidden = 16), seed = 3,
                 control = svi_control(max_steps = 6000, progress = FALSE))
  pr <- predict(fit, d[te, ])$mean
  lr <- stats::predict(stats::glm(y ~ x1 + x2, binomial(), d[tr, ]), d[te, ], type = "response")
  auc <- function(s, y) {
    r <- rank(s)
    (sum(r[y == 1]) - sum(y == 1) * (sum(y == 1) + 1) / 2) / (sum(y == 1) * sum(y == 0))
  }
  expect_gt(auc(pr, d$y[te]), 0.95)
  expect_lt(auc(lr, d$y[te]), 0.7)
  expect_true(all(pr >= 0 & pr <= 1))
})

test_that("seeds reproduce a network's fit bit for bit", {
  d <- sim_bnn_data(n = 200)
  f <- function(seed) svi_fit(yg ~ x1 + x2 + g, d, model = bnn(hidden = c(8, 4)), seed = seed,
                              control = svi_control(max_steps = 300, progress = FALSE))
  a <- suppressWarnings(f(5))
  b <- suppressWarnings(f(5))
  c <- suppressWarnings(f(6))
  expect_identical(a$mean, b$mean)
  expect_identical(a$elbo, b$elbo)
  expect_false(identical(a$mean, c$mean))
  # two threads over four tiles of 64 rows (the lanes' sums added in order)
  g <- function() svi_fit(yg ~ x1 + x2 + g, d, model = bnn(hidden = 300), seed = 5,
                          control = svi_control(max_steps = 100, threads = 2L, progress = FALSE))
  a <- suppressWarnings(g())
  b <- suppressWarnings(g())
  expect_identical(a$mean, b$mean)
  expect_identical(a$elbo, b$elbo)
})

test_that("bnn() and svi_fit(model = bnn()) refuse bad input, naming the argument", {
  d <- sim_bnn_data()
  expect_error(bnn(hidden = 0), "hidden", class = "svir_error")
  expect_error(bnn(hidden = 2.5), "hidden", class = "svir_error")
  expect_error(bnn(hidden = NA), "hidden", class = "svir_error")
  expect_error(bnn(activation = "sigmoid"), "Unknown activation", class = "svir_error")
  expect_error(bnn(prior_scale = -1), "prior_scale", class = "svir_error")
  expect_error(svi_fit(yg ~ x1, d, family = binomial(), model = bnn(5)), "0/1", class = "svir_error")
  expect_error(svi_fit(yg ~ x1, d, model = bnn(5), method = "qem"), "not offered for networks",
               class = "svir_error")
  expect_error(svi_fit(yg ~ x1, d, model = "bnn"), "model", class = "svir_error")
  expect_error(svi_fit(yg ~ x1, d, family = binomial("probit"), model = bnn(5)), "canonical",
               class = "svir_error")
  fit <- suppressWarnings(svi_fit(yg ~ x1 + x2, d, model = bnn(3), seed = 1,
                                  control = svi_control(max_steps = 50, progress = FALSE)))
  expect_error(predict(fit, data.frame(x1 = 1)), "x2", class = "svir_error")
})

# NUTS reference: inst/extdata/bnn-small-nuts.rds, built by
# bench/nuts/build_bnn_ref.R (rstan, 4 chains x 3000 draws; predictive
# R-hat 1.0008, bulk ESS >= 6944): one hidden layer of 5 tanh units, n = 60,
# svir's priors. The predictive quantities do not depend on which of the
# network's symmetric modes a chain is in.
test_that("a 5-unit network's predictions are close to NUTS's (with a KL warm-up)", {
  ref <- readRDS(system.file("extdata", "bnn-small-nuts.rds", package = "svir"))
  nd <- data.frame(x = ref$xt)
  fit <- function(w) svi_fit(y ~ x, ref$data, model = bnn(hidden = 5, activation = "tanh", kl_warmup = w),
                             seed = 1, control = svi_control(max_steps = 30000, progress = FALSE))
  f <- fit(2000)
  p <- predict(f, nd)
  pl <- predict(f, nd, type = "link")
  # the predictive means within 0.5 NUTS predictive sds at all 11 points
  # (2 of them outside the data; 0.32 in bench/results/bnn-small-nuts-*.md),
  # and a new observation's predictive sd within 0.7 to 1.4 of NUTS's
  # (0.81 to 1.21 there)
  expect_lt(max(abs(pl$mean - ref$mu_mean) / ref$y_sd), 0.5)
  r <- p$sd / ref$y_sd
  expect_true(all(r > 0.7 & r < 1.4))
  # the mean's own sd (the epistemic part) is where mean-field errs: 0.4 to
  # 2 times NUTS's; recorded, not a target
  rm <- pl$sd / ref$mu_sd
  expect_true(all(rm > 0.3 & rm < 2.5))
  # without the warm-up the fit prunes its units: a nearly flat curve, at a
  # higher ELBO (bench/README.md, "Bayesian neural networks")
  f0 <- fit(0)
  expect_gt(max(abs(predict(f0, nd, type = "link")$mean - ref$mu_mean) / ref$y_sd), 1.5)
  expect_gt(f0$elbo_final, f$elbo_final)
})

test_that("the held-out loss is the negative log predictive density", {
  # without hidden layers and with point-mass guides every draw is the same
  # network: the loss is the mean of -log p(y | x'w + b) over the held-out
  # rows, exactly
  d <- sim_bnn_data(n = 60, seed = 7)
  for (fam in list(gaussian(), binomial(), poisson())) {
    y <- c(gaussian = "yg", binomial = "yb", poisson = "yp")[[fam$family]]
    job <- bnn_job(stats::as.formula(paste(y, "~ x1 + x2")), d, fam, bnn(hidden = integer(0)),
                   svi_control(validation = 0.3))
    sp <- job$spec
    expect_identical(sp$nv, 18L)
    expect_identical(sp$n, 42L)
    D <- length(sp$init_mu)
    mu <- c(0.4, -0.3, 0.2, if (fam$family == "gaussian") log(0.7))
    v <- c(mu, rep(log(1e-9), D))
    loss <- .Call(C_svir_bnn_validate_r, sp, job$ctrl, v)
    eta <- drop(sp$Xv %*% mu[1:2] + mu[3])
    lp <- switch(fam$family,
                 gaussian = dnorm(sp$yv, eta, exp(mu[4]), log = TRUE),
                 binomial = dbinom(sp$yv, 1, plogis(eta), log = TRUE),
                 poisson = dpois(sp$yv, exp(eta), log = TRUE))
    expect_equal(loss, -mean(lp), tolerance = 1e-9, label = fam$family)
  }
})

test_that("early stopping on held-out rows keeps the best window and says so", {
  set.seed(1)
  n <- 200
  d <- data.frame(x = runif(n, -3, 3))
  d$y <- sin(d$x) + rnorm(n, sd = 0.5)
  f <- svi_fit(y ~ x, d, model = bnn(hidden = 50), seed = 1,
               control = svi_control(validation = 0.25, eval_every = 100, max_steps = 20000,
                                     progress = FALSE))
  expect_identical(f$n, 150L)
  expect_identical(f$nval, 50L)
  # one loss per window; stopped `patience` (3) windows after the best
  expect_length(f$val_trace, f$steps / 100)
  expect_identical(f$stop_reason, "early_stop")
  expect_identical(length(f$val_trace) - which.min(f$val_trace), 3L)
  expect_equal(f$val_best_step, 100 * which.min(f$val_trace))
  expect_output(print(f), "held-out rows: 50")
  expect_error(svi_control(validation = 0.95), "validation")
  expect_error(svi_fit(y ~ x, d[1:2, ], model = bnn(3), control = svi_control(validation = 0.5)),
               "validation", class = "svir_error")
})

test_that("the one-cycle schedule is PyTorch's OneCycleLR and runs to max_steps", {
  lr <- .Call(C_svir_loop_lr_r, svir:::svir_codes$lr[["onecycle"]], 0.01, 1000, 100)
  f <- (seq_len(1000)) / 1000
  lo <- 0.01 / 25
  fin <- lo / 1e4
  want <- ifelse(f <= 0.3, lo + (0.01 - lo) * (1 - cos(pi * f / 0.3)) / 2,
                 fin + (0.01 - fin) * (1 + cos(pi * (f - 0.3) / 0.7)) / 2)
  expect_equal(lr, want, tolerance = 1e-14)
  expect_equal(max(lr), 0.01, tolerance = 1e-3)
  expect_equal(which.max(lr), 300L)
  # the ELBO's window rule stops a constant schedule on a plateau (here a
  # rising ELBO, so it never does) and not a one-cycle one
  expect_true(all(.Call(C_svir_loop_lr_r, svir:::svir_codes$lr[["constant"]], 0.01, 1000, 100) == 0.01))
  d <- sim_bnn_data(n = 200)
  fit <- expect_silent(svi_fit(yg ~ x1 + x2, d, model = bnn(hidden = 8), seed = 1,
                               control = svi_control(lr_schedule = "onecycle", lr = 0.02,
                                                     max_steps = 1500, progress = FALSE)))
  expect_identical(fit$stop_reason, "max_steps")
  expect_identical(fit$steps, 1500L)
})

test_that("print() shows the ELBO's parts and prior_summary() the priors", {
  d <- sim_bnn_data(n = 150)
  f <- svi_fit(yg ~ x1 + x2, d, model = bnn(hidden = 6, prior_scale = 2), seed = 1,
               control = svi_control(progress = FALSE))
  # the parts at the final guide: the ELBO they make is the loop's final
  # window mean up to its noise and drift
  expect_true(is.finite(f$ell) && f$kl > 0)
  expect_lt(abs((f$ell - f$kl) - f$elbo_final), 0.05 * abs(f$elbo_final) + 5)
  expect_output(print(f), "expected log-likelihood")
  ps <- prior_summary(f)
  expect_s3_class(ps, "svir_prior_summary")
  expect_identical(ps$class, c("w", "b", "w", "b", "sigma"))
  expect_match(ps$prior[1], "normal(0, 1.414)", fixed = TRUE) # 2 / sqrt(2 inputs)
  expect_identical(ps$source[1:2], c("user", "default"))
  expect_output(print(ps), "half-normal")
})

test_that("the Laplace and hierarchical priors' KL terms are their integrals", {
  # with no hidden layer and the same guide over the weights, the ELBO
  # estimates of one step under two priors differ by their KLs only
  d <- sim_bnn_data(n = 25, seed = 4)
  mk <- function(prior) bnn_job(yg ~ x1 + x2, d, gaussian(),
                                bnn(hidden = integer(0), prior = prior, prior_scale = 1.3, bias_scale = 0.7))
  jn <- mk("normal")
  jl <- mk("laplace")
  jh <- mk("hierarchical")
  mu <- c(0.3, -0.2, 0.1)
  lsd <- log(c(0.2, 0.3, 0.1))
  sig <- c(log(0.6), log(0.05))
  lam <- c(0.2, log(0.4)) # log lambda's guide: mean, log sd
  vn <- c(mu, sig[1], lsd, sig[2])
  vh <- c(mu, lam[1], sig[1], lsd, lam[2], sig[2])
  expect_identical(length(jh$spec$init_mu), 5L)
  e <- function(j, v) .Call(C_svir_bnn_elbo_grad_r, j$spec, j$ctrl, v, 3)$elbo
  tau <- 1.3 / sqrt(2)
  sd <- exp(lsd[1:2])
  kl_normal <- sum(log(tau) - lsd[1:2] + (sd^2 + mu[1:2]^2) / (2 * tau^2) - 0.5)
  # Laplace with the normal's variance: by quadrature
  b <- tau / sqrt(2)
  kl_lap <- sum(vapply(1:2, function(k) stats::integrate(function(w) {
    lq <- dnorm(w, mu[k], sd[k], log = TRUE)
    exp(lq) * (lq - (-log(2 * b) - abs(w) / b))
  }, -Inf, Inf, rel.tol = 1e-10)$value, 0))
  expect_equal(e(jn, vn) - e(jl, vn), kl_lap - kl_normal, tolerance = 1e-7)
  # hierarchical, lambda ~ Gamma(6, 6) and w | lambda ~ N(0, tau^2 / lambda):
  # by Monte Carlo over q
  set.seed(9)
  N <- 4e5
  ll <- rnorm(N, lam[1], exp(lam[2]))
  v <- dnorm(ll, lam[1], exp(lam[2]), log = TRUE) - (dgamma(exp(ll), 6, 6, log = TRUE) + ll)
  for (k in 1:2) {
    w <- rnorm(N, mu[k], sd[k])
    v <- v + dnorm(w, mu[k], sd[k], log = TRUE) - dnorm(w, 0, tau / sqrt(exp(ll)), log = TRUE)
  }
  diff <- (e(jn, vn) - e(jh, vh)) - (mean(v) - kl_normal)
  expect_lt(abs(diff), 4 * sd(v) / sqrt(N))
})

test_that("a classifier's uncertainty grows away from its training data", {
  # a ring, with no data right of x1 = 1 (the vignette's example)
  set.seed(3)
  n <- 500
  d <- data.frame(x1 = runif(n, -2, 2), x2 = runif(n, -2, 2))
  d <- d[d$x1 < 1, ]
  d$y <- as.numeric(d$x1^2 + d$x2^2 < 1.5)
  fit <- svi_fit(y ~ x1 + x2, d, family = binomial(), model = bnn(hidden = 16), seed = 1,
                 control = svi_control(max_steps = 6000, progress = FALSE))
  far <- expand.grid(x1 = c(2, 2.5), x2 = c(-2, -1.5, 1.5, 2))     # no data
  near <- expand.grid(x1 = c(-1.8, -1.5), x2 = c(-2, -1.5, 1.5, 2)) # the same class, data
  # the posterior sd of P(inside): 0.20 against 0.007 for this seed
  expect_gt(mean(predict(fit, far)$sd), 5 * mean(predict(fit, near)$sd))
  expect_true(all(predict(fit, near)$mean < 0.1))
})

test_that("plot() and summary() of a network", {
  d <- sim_bnn_data(n = 200)
  f <- svi_fit(yg ~ x1 + x2, d, model = bnn(hidden = 8), seed = 1,
               control = svi_control(validation = 0.2, eval_every = 50, progress = FALSE))
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_invisible(plot(f))
  s <- summary(f)
  expect_s3_class(s, "summary.svi_bnn")
  expect_output(print(s), "plateau schedule, batch full")
  expect_output(print(s), "Priors:")
})
