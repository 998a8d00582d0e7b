# Prior weights (issue 15), glmmTMB's meaning: each observation's
# log-likelihood times its weight, so integer weights are replicated rows;
# for a binomial proportion the weights are its trials, as in glm().

# the spec with its observations repeated as idx says
repeat_rows <- function(spec, idx) {
  s <- spec
  s$y <- spec$y[idx]
  s$X <- spec$X[idx, , drop = FALSE]
  if (!is.null(spec$trials)) s$trials <- spec$trials[idx]
  if (!is.null(spec$offset)) s$offset <- spec$offset[idx]
  if (!is.null(spec$Xz)) s$Xz <- spec$Xz[idx, , drop = FALSE]
  s$terms <- lapply(spec$terms, function(tm) {
    tm$group <- tm$group[idx]
    tm$Z <- tm$Z[idx, , drop = FALSE]
    tm
  })
  s$weights <- NULL
  s
}

for (cs in family_cases) {
  lab <- paste(cs$family$family, cs$family$link)
  test_that(paste("weighted ELBO: replicated rows, and exact gradients:", lab), {
    d <- sim_glmm(cs$sim, n_groups = 6, n_per = 8, crossed = 4, seed = 3)
    spec <- svir:::svir_build_spec(y ~ x1 + x2 + (x1 | g) + (1 | h), d, family = cs$family)$spec
    set.seed(4)
    w <- sample(0:3, length(spec$y), replace = TRUE)
    ws <- spec
    ws$weights <- as.double(w)
    rs <- repeat_rows(spec, rep(seq_along(w), w))
    for (guide in c("meanfield", "fullrank")) {
      ctrl <- list(guide = guide, seed = 11, threads = 1L, num_particles = 2L, stl = 0L)
      v <- rand_vpar(spec, guide)
      a <- .Call(svir:::C_svir_elbo_grad_r, ws, ctrl, v, 5)
      b <- .Call(svir:::C_svir_elbo_grad_r, rs, ctrl, v, 5)
      expect_equal(a$elbo, b$elbo, tolerance = 1e-10)
      expect_equal(a$grad, b$grad, tolerance = 1e-9)
      # non-integer weights: the gradient against finite differences
      ws$weights <- runif(length(w), 0.2, 2)
      f <- function(v) .Call(svir:::C_svir_elbo_grad_r, ws, ctrl, v, 5)$elbo
      g <- .Call(svir:::C_svir_elbo_grad_r, ws, ctrl, v, 5)$grad
      num <- fd_grad(f, v)
      expect_lt(max(abs(num - g)) / max(1, max(abs(num))), 1e-6)
      ws$weights <- as.double(w)
      # minibatches: finite differences too
      ctrl$batch_size <- 5L
      f <- function(v) .Call(svir:::C_svir_elbo_grad_r, ws, ctrl, v, 5)$elbo
      g <- .Call(svir:::C_svir_elbo_grad_r, ws, ctrl, v, 5)$grad
      expect_lt(max(abs(fd_grad(f, v) - g)) / max(1, max(abs(g))), 1e-6)
    }
    # the random-intercept loops, and zero inflation
    spec_i <- svir:::svir_build_spec(y ~ x1 + (1 | g) + (1 | h), d, family = cs$family)$spec
    spec_i$weights <- as.double(w)
    rs_i <- repeat_rows(spec_i, rep(seq_along(w), w))
    ctrl <- list(guide = "meanfield", seed = 11, threads = 1L, num_particles = 2L, stl = 0L)
    v <- rand_vpar(spec_i, "meanfield")
    expect_equal(.Call(svir:::C_svir_elbo_grad_r, spec_i, ctrl, v, 5)$elbo,
                 .Call(svir:::C_svir_elbo_grad_r, rs_i, ctrl, v, 5)$elbo, tolerance = 1e-10)
    if (cs$sim %in% c("poisson", "negbin")) {
      spec_z <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = cs$family, ziformula = ~x2)$spec
      spec_z$weights <- as.double(w)
      rs_z <- repeat_rows(spec_z, rep(seq_along(w), w))
      v <- rand_vpar(spec_z, "meanfield")
      a <- .Call(svir:::C_svir_elbo_grad_r, spec_z, ctrl, v, 5)
      b <- .Call(svir:::C_svir_elbo_grad_r, rs_z, ctrl, v, 5)
      expect_equal(a$elbo, b$elbo, tolerance = 1e-10)
      expect_equal(a$grad, b$grad, tolerance = 1e-9)
    }
  })
}

test_that("weighted fits agree with fits to replicated rows", {
  set.seed(1)
  d <- lme4::sleepstudy
  d$w <- sample(1:3, nrow(d), TRUE)
  rep_d <- d[rep(seq_len(nrow(d)), d$w), ]
  f1 <- svi_fit(Reaction ~ Days + (Days | Subject), d, weights = w, seed = 1)
  f2 <- svi_fit(Reaction ~ Days + (Days | Subject), rep_d, seed = 1)
  se <- sqrt(diag(vcov(f2)))
  expect_lt(max(abs(fixef(f1) - fixef(f2)) / se), 0.1)
  expect_lt(max(abs(sqrt(diag(vcov(f1))) / se - 1)), 0.1)
  expect_equal(sigma(f1), sigma(f2), tolerance = 0.02)
  # Poisson, and QEM
  s <- glmmTMB::Salamanders
  s$w <- rep(1:2, length.out = nrow(s))
  rep_s <- s[rep(seq_len(nrow(s)), s$w), ]
  for (method in c("svi", "qem")) {
    f1 <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), weights = w, seed = 1,
                  method = method)
    f2 <- svi_fit(count ~ mined + (1 | site), rep_s, family = poisson(), seed = 1, method = method)
    se <- sqrt(diag(vcov(f2)))
    expect_lt(max(abs(fixef(f1) - fixef(f2)) / se), 0.25)
  }
  # and glmmTMB's weighted estimates
  g <- glmmTMB::glmmTMB(Reaction ~ Days + (Days | Subject), d, weights = w)
  f1 <- svi_fit(Reaction ~ Days + (Days | Subject), d, weights = w, seed = 1)
  tmb_se <- sqrt(diag(vcov(g)$cond))
  expect_lt(max(abs(fixef(f1) - glmmTMB::fixef(g)$cond) / tmb_se), 0.25)
})

test_that("binomial proportions with weights are cbind(successes, failures)", {
  cb <- lme4::cbpp
  cb$prop <- cb$incidence / cb$size
  f1 <- svi_fit(prop ~ period + (1 | herd), cb, family = binomial(), weights = size, seed = 1)
  f2 <- svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cb,
                family = binomial(), seed = 1)
  expect_identical(fixef(f1), fixef(f2))
  expect_identical(f1$elbo, f2$elbo)
  # a proportion without weights is refused, as before
  expect_error(svi_fit(prop ~ period, cb, family = binomial()), class = "svir_error",
               regexp = "0 or 1")
  cb$prop[1] <- 1.5
  expect_error(svi_fit(prop ~ period, cb, family = binomial(), weights = size),
               class = "svir_error", regexp = "outside 0..1")
})

test_that("a weight of 0 leaves the row out, and bad weights are refused", {
  d <- lme4::sleepstudy
  w <- rep(1, nrow(d))
  w[1:10] <- 0
  f1 <- svi_fit(Reaction ~ Days + (1 | Subject), d, weights = w, seed = 1)
  f2 <- svi_fit(Reaction ~ Days + (1 | Subject), d[-(1:10), ], seed = 1)
  se <- sqrt(diag(vcov(f2)))
  expect_lt(max(abs(fixef(f1) - fixef(f2)) / se), 0.1)
  expect_error(svi_fit(Reaction ~ Days, d, weights = -w), class = "svir_error",
               regexp = "non-negative")
  expect_error(svi_fit(Reaction ~ Days, d, weights = w[-1]), class = "svir_error",
               regexp = "`weights` has 179 values")
  expect_error(svi_fit(Reaction ~ Days, d, weights = "a"), class = "svir_error",
               regexp = "numeric vector")
  expect_error(svi_fit(Reaction ~ Days, d, weights = 0 * w), class = "svir_error",
               regexp = "Every weight is 0")
  w[3] <- NA
  expect_equal(nobs(svi_fit(Reaction ~ Days, d, weights = w, seed = 1)), nrow(d) - 1)
  expect_error(svi_fit(Reaction ~ Days, d, weights = w, na.action = na.fail),
               class = "svir_error", regexp = "Missing values")
  Y <- matrix(rpois(40, 3), 20)
  expect_error(svi_fit(Y ~ 1, family = pln(), weights = rep(1, 20)), class = "svir_error",
               regexp = "`weights` is for GLMMs")
})
