# rstantools' verbs on svir's fits (issue 18): posterior_epred(),
# posterior_predict(), log_lik(); loo::loo() on the log-likelihoods.
skip_if_not_installed("rstantools")

test_that("a GLMM's log_lik is each observation's density under each draw", {
  fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 1,
                 control = svi_control(progress = FALSE))
  ll <- rstantools::log_lik(fit, ndraws = 200)
  ep <- rstantools::posterior_epred(fit, ndraws = 200)
  expect_identical(dim(ll), c(200L, 180L))
  expect_identical(dim(ep), c(200L, 180L))
  sel <- svir:::svir_draw_sel(fit, 200)
  sig <- fit$draws[sel, "sigma"]
  y <- lme4::sleepstudy$Reaction
  # the same draws: the density of y at each draw's mean and sigma
  expect_equal(ll, dnorm(matrix(y, 200, 180, byrow = TRUE), ep, sig, log = TRUE), ignore_attr = TRUE)
  # the draws' linear predictors average to the point prediction (identity
  # link) up to Monte Carlo error
  expect_lt(max(abs(colMeans(ep) - predict(fit))), 3)
  # the fitting data again as newdata: the same numbers
  expect_equal(rstantools::log_lik(fit, newdata = lme4::sleepstudy, ndraws = 200), ll)
  # loo on them: finite, and an effective number of parameters between the
  # fixed effects' 2 and the 2 x 18 random effects + 6
  skip_if_not_installed("loo")
  lo <- suppressWarnings(loo::loo(ll))
  expect_true(is.finite(lo$estimates["elpd_loo", "Estimate"]))
  expect_gt(lo$estimates["p_loo", "Estimate"], 2)
  expect_lt(lo$estimates["p_loo", "Estimate"], 42)
})

test_that("a GLMM's posterior_predict draws from the family with each draw's parameters", {
  fit <- svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp,
                 family = binomial(), seed = 2, control = svi_control(progress = FALSE))
  yr <- rstantools::posterior_predict(fit, ndraws = 400, seed = 3)
  expect_identical(dim(yr), c(400L, nrow(lme4::cbpp)))
  expect_identical(rstantools::posterior_predict(fit, ndraws = 400, seed = 3), yr)
  expect_true(all(yr >= 0 & yr <= matrix(lme4::cbpp$size, 400, nrow(lme4::cbpp), byrow = TRUE)))
  ep <- rstantools::posterior_epred(fit, ndraws = 400)
  # the successes' mean is trials x the probability, up to Monte Carlo error
  # (binomial sd at most sqrt(size / 4) / sqrt(400))
  expect_lt(max(abs(colMeans(yr) - colMeans(ep) * lme4::cbpp$size) / sqrt(lme4::cbpp$size / 4 / 400)), 5)
  ll <- rstantools::log_lik(fit, ndraws = 400)
  expect_equal(ll, dbinom(matrix(lme4::cbpp$incidence, 400, nrow(lme4::cbpp), byrow = TRUE),
                          matrix(lme4::cbpp$size, 400, nrow(lme4::cbpp), byrow = TRUE), ep, log = TRUE),
               ignore_attr = TRUE)
  expect_error(rstantools::log_lik(fit, newdata = lme4::cbpp[, c("herd", "period")]), "response",
               class = "svir_error")
})

test_that("a zero-inflated GLMM's log_lik mixes the structural zeros in", {
  set.seed(5)
  d <- data.frame(g = factor(rep(1:20, each = 15)), x = rnorm(300))
  b <- rnorm(20, 0, 0.5)
  d$y <- ifelse(runif(300) < 0.3, 0, rpois(300, exp(0.5 + 0.4 * d$x + b[d$g])))
  fit <- svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~1, seed = 1,
                 control = svi_control(progress = FALSE))
  ll <- rstantools::log_lik(fit, ndraws = 100)
  ep <- rstantools::posterior_epred(fit, ndraws = 100)
  pz <- plogis(fit$draws[svir:::svir_draw_sel(fit, 100), grep("^zi", colnames(fit$draws))[1]])
  mu <- ep / (1 - pz)
  Y <- matrix(d$y, 100, 300, byrow = TRUE)
  want <- ifelse(Y == 0, log(pz + (1 - pz) * exp(-mu)), log1p(-pz) + dpois(Y, mu, log = TRUE))
  expect_equal(ll, want, ignore_attr = TRUE, tolerance = 1e-10)
})

test_that("a network's verbs need newdata and agree with predict()", {
  set.seed(7)
  n <- 80
  d <- data.frame(x = runif(n, -2, 2))
  d$y <- sin(2 * d$x) + rnorm(n, 0, 0.25)
  fit <- suppressWarnings(svi_fit(y ~ x, d, model = bnn(hidden = 5, activation = "tanh"), seed = 1,
                                  control = svi_control(progress = FALSE, max_steps = 1500)))
  expect_error(rstantools::log_lik(fit), "newdata", class = "svir_error")
  ep <- rstantools::posterior_epred(fit, newdata = d)
  expect_identical(dim(ep), as.integer(c(nrow(fit$draws), n)))
  # the draws' mean is predict()'s mean, from the same draws
  expect_equal(colMeans(ep), predict(fit, d)$mean, tolerance = 1e-10, ignore_attr = TRUE)
  ll <- rstantools::log_lik(fit, newdata = d)
  sig <- fit$yscale * exp(fit$draws[, ncol(fit$draws)])
  expect_equal(ll, dnorm(matrix(d$y, nrow(ep), n, byrow = TRUE), ep, sig, log = TRUE),
               ignore_attr = TRUE)
  yr <- rstantools::posterior_predict(fit, newdata = d, seed = 4)
  # a new observation's sd: the mean's spread and the noise (predict()'s sd)
  expect_lt(max(abs(apply(yr, 2, sd) / predict(fit, d)$sd - 1)), 0.25)
  # a classifier's log-likelihood is Bernoulli's
  d$z <- as.integer(d$x + rnorm(n, 0, 0.5) > 0)
  fz <- suppressWarnings(svi_fit(z ~ x, d, family = binomial(), model = bnn(hidden = 4), seed = 1,
                                 control = svi_control(progress = FALSE, max_steps = 800)))
  p <- rstantools::posterior_epred(fz, newdata = d)
  expect_equal(rstantools::log_lik(fz, newdata = d),
               dbinom(matrix(d$z, nrow(p), n, byrow = TRUE), 1, p, log = TRUE), ignore_attr = TRUE)
})

test_that("a count mixture's log_lik is each row's density with its label summed out", {
  set.seed(8)
  n <- 60
  mu <- rbind(c(1, 8, 3, 1), c(8, 1, 1, 5))
  z <- rep(1:2, each = n / 2)
  d <- data.frame(row.names = paste0("cell", 1:n))
  d$Y <- matrix(rpois(n * 4, mu[z, ]), n, dimnames = list(NULL, paste0("g", 1:4)))
  fit <- suppressWarnings(svi_fit(Y ~ 1, d, family = count_mixture(2, "poisson", nstart = 1), seed = 1,
                                  control = svi_control(progress = FALSE, max_steps = 400)))
  expect_error(rstantools::log_lik(fit), "newdata", class = "svir_error")
  ll <- rstantools::log_lik(fit, newdata = d, ndraws = 50)
  expect_identical(dim(ll), c(50L, as.integer(n)))
  expect_identical(colnames(ll), rownames(d))
  # each row's density is at most its best cluster's Poisson likelihood at
  # the data's own rates, and near the truth's mixture density
  truth <- log(0.5 * exp(rowSums(dpois(d$Y, mu[rep(1, n), ], log = TRUE))) +
                 0.5 * exp(rowSums(dpois(d$Y, mu[rep(2, n), ], log = TRUE))))
  expect_lt(mean(abs(colMeans(ll) - truth)), 0.5)
  skip_if_not_installed("loo")
  lo <- suppressWarnings(loo::loo(ll))
  expect_true(is.finite(lo$estimates["elpd_loo", "Estimate"]))
})

# ---- Poisson-lognormal models ------------------------------------------------

pln_data <- function(n = 40, p = 5, seed = 8) {
  set.seed(seed)
  d <- data.frame(x = rnorm(n), depth = exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rpois(n * p, d$depth * exp(1 + 0.5 * d$x + matrix(rnorm(n * p, 0, 0.5), n))), n,
                dimnames = list(NULL, letters[seq_len(p)]))
  d
}

test_that("a Poisson-lognormal fit's verbs draw the latent layer from q(Z)", {
  d <- pln_data()
  n <- 40L
  p <- 5L
  fit <- svi_fit(Y ~ x + offset(log(depth)), data = d, family = pln())
  S <- 2000L
  ep <- rstantools::posterior_epred(fit, ndraws = S)
  expect_identical(dim(ep), c(S, n * p))
  # column-major over the count matrix, named "row:column"
  expect_identical(colnames(ep)[c(1, 2, n + 1, n * p)], c("1:a", "2:a", "1:b", "40:e"))
  # log(epred) - O are draws of N(M, S^2): their means and sds per entry
  lz <- log(ep) - rep(rep(log(d$depth), p), each = S)
  expect_lt(max(abs(colMeans(lz) - as.vector(fit$M)) / (as.vector(fit$S) / sqrt(S))), 4.5)
  expect_lt(max(abs(apply(lz, 2, sd) / as.vector(fit$S) - 1)), 0.1)
  # and their exp's mean is fitted(), exp(O + M + S^2 / 2)
  expect_lt(max(abs(colMeans(ep) / as.vector(fitted(fit)) - 1)), 0.07)
  # log_lik: the Poisson density of each count under the same draws
  ll <- rstantools::log_lik(fit, ndraws = S)
  expect_identical(colnames(ll), colnames(ep))
  expect_equal(ll, dpois(matrix(as.vector(d$Y), S, n * p, byrow = TRUE), ep, log = TRUE),
               ignore_attr = TRUE, tolerance = 1e-10)
  # the session's generator is left as it was
  set.seed(3)
  u1 <- runif(1)
  set.seed(3)
  invisible(rstantools::log_lik(fit, ndraws = 10))
  expect_identical(runif(1), u1)
  # posterior_predict: Poisson counts from those means, reproducible by seed
  yr <- rstantools::posterior_predict(fit, ndraws = S, seed = 4)
  expect_identical(rstantools::posterior_predict(fit, ndraws = S, seed = 4), yr)
  expect_identical(dim(yr), dim(ep))
  expect_true(all(yr >= 0 & yr == round(yr)))
  z <- (colMeans(yr) - colMeans(ep)) / sqrt(apply(yr, 2, var) / S + 1e-12)
  expect_lt(max(abs(z)), 5)
  expect_gt(sd(z), 0.8)
  expect_lt(sd(z), 1.2)
  skip_if_not_installed("loo")
  lo <- suppressWarnings(loo::loo(ll))
  expect_true(is.finite(lo$estimates["elpd_loo", "Estimate"]))
  expect_identical(nrow(lo$pointwise), n * p)
})

test_that("a Poisson-lognormal fit's verbs on new rows draw Z from the model", {
  d <- pln_data()
  fit <- svi_fit(Y ~ x + offset(log(depth)), data = d, family = pln(covariance = "diagonal"))
  nd <- data.frame(x = c(-1, 0, 1), depth = c(1, 2, 1), row.names = c("r1", "r2", "r3"))
  nd$Y <- d$Y[1:3, ]
  S <- 20000L
  ep <- rstantools::posterior_epred(fit, newdata = nd, ndraws = S)
  expect_identical(dim(ep), c(S, 15L))
  expect_identical(colnames(ep)[1:4], c("r1:a", "r2:a", "r3:a", "r1:b"))
  # the mean of the Poisson-lognormal: predict()'s exp(O + X B + diag(Sigma) / 2)
  expect_lt(max(abs(colMeans(ep) / as.vector(predict(fit, newdata = nd)) - 1)), 0.05)
  # the draws' latent values: means X B, variances diag(Sigma)
  lz <- log(ep) - rep(rep(log(nd$depth), 5), each = S)
  eta <- as.vector(model.matrix(~x, nd) %*% coef(fit))
  expect_lt(max(abs(colMeans(lz) - eta)), 0.05)
  expect_equal(apply(lz, 2, var), rep(diag(sigma(fit)), each = 3), tolerance = 0.05, ignore_attr = TRUE)
  ll <- rstantools::log_lik(fit, newdata = nd, ndraws = S)
  expect_equal(ll, dpois(matrix(as.vector(nd$Y), S, 15, byrow = TRUE), ep, log = TRUE),
               ignore_attr = TRUE, tolerance = 1e-10)
  # the counts' columns are matched by name
  nd2 <- nd
  nd2$Y <- nd$Y[, 5:1]
  expect_equal(rstantools::log_lik(fit, newdata = nd2, ndraws = 50),
               rstantools::log_lik(fit, newdata = nd, ndraws = 50))
  expect_error(rstantools::log_lik(fit, newdata = nd[, c("x", "depth")]), "count matrix",
               class = "svir_error")
  yr <- rstantools::posterior_predict(fit, newdata = nd[, c("x", "depth")], ndraws = 100, seed = 1)
  expect_identical(dim(yr), c(100L, 15L))
})

test_that("a PLN-PCA fit's draws go through its factors", {
  d <- pln_data(n = 50, p = 6, seed = 9)
  fit <- svi_fit(Y ~ x + offset(log(depth)), data = d, family = pln(rank = 2))
  S <- 4000
  ep <- rstantools::posterior_epred(fit, ndraws = S)
  lz <- log(ep) - rep(rep(log(d$depth), 6), each = S)
  lat <- svir:::svir_pln_latent(fit)
  expect_lt(max(abs(colMeans(lz) - as.vector(lat$M)) / (as.vector(lat$S) / sqrt(S))), 4.5)
  expect_lt(max(abs(apply(lz, 2, sd) / as.vector(lat$S) - 1)), 0.1)
  # a row's entries are correlated: covariance C diag(s_i^2) C'
  i <- 7
  C <- fit$loadings
  V <- C %*% diag(fit$factors$sd[i, ]^2) %*% t(C)
  expect_lt(max(abs(cov(lz[, i + 50 * (0:5)]) - V)), 0.1 * max(abs(V)))
  ll <- rstantools::log_lik(fit, ndraws = 200)
  expect_identical(dim(ll), c(200L, 300L))
  expect_true(all(is.finite(ll)))
})

# ---- count mixtures: posterior_epred() and posterior_predict() ----------------

mix_data <- function(dist, n = 80, seed = 8) {
  set.seed(seed)
  mu <- rbind(c(1, 8, 3, 1, 4, 2), c(8, 1, 1, 5, 2, 4))
  z <- rep(1:2, each = n / 2)
  d <- data.frame(b = factor(rep(c("u", "v"), n / 2)), sf = exp(rnorm(n, 0, 0.3)),
                  row.names = paste0("cell", seq_len(n)))
  m <- d$sf * mu[z, ] * exp(outer(d$b == "v", c(0.3, -0.3, 0, 0.5, 0, 0)))
  Y <- if (dist == "poisson") rpois(length(m), m) else rnbinom(length(m), size = 5, mu = m)
  if (dist == "zinb") Y[runif(length(m)) < 0.3] <- 0
  Y <- matrix(Y, n, dimnames = list(NULL, paste0("g", 1:6)))
  Y[rowSums(Y) == 0, 1] <- 1 # no empty rows
  d$Y <- Y
  d
}

# the expected counts of every entry under draw th, by hand: each cluster's
# mean weighted by the row's probability of the cluster under th
mix_epred_hand <- function(fit, d, th) {
  K <- fit$K
  p <- 6
  n <- nrow(d)
  dist <- fit$family$dist
  bg <- !is.null(fit$bg_prior)
  mu <- matrix(th[seq_len(K * p)], K, p, byrow = TRUE)
  off <- K * p + 2 * p
  gam <- th[off + seq_len(p)]
  off <- off + p
  phi <- if (dist != "poisson") exp(th[off + seq_len(p)])
  off <- off + length(phi)
  om <- if (dist == "zinb") plogis(th[off + seq_len(p)]) else rep(0, p)
  off <- off + if (dist == "zinb") p else 0
  bgm <- if (bg) exp(th[off + seq_len(p)]) else rep(0, p)
  psi <- if (bg) exp(th[off + p + seq_len(p)])
  beta <- if (bg) plogis(th[off + 2 * p + seq_len(p)]) else rep(0, p)
  eta <- c(th[length(th) - (K - 1) + seq_len(K - 1)], 0)
  lpi <- eta - log(sum(exp(eta)))
  lin <- log(d$sf) + outer((d$b == "v") - fit$xbar, gam)
  ms <- lapply(seq_len(K), function(k) exp(lin + matrix(mu[k, ], n, p, byrow = TRUE)))
  lk <- vapply(seq_len(K), function(k) {
    m <- ms[[k]]
    w <- rep(om, each = n)
    l <- switch(dist,
      poisson = dpois(d$Y, m, log = TRUE),
      nb = if (bg) log((1 - rep(beta, each = n)) * dnbinom(d$Y, size = rep(phi, each = n), mu = m) +
                        rep(beta, each = n) * dnbinom(d$Y, size = rep(psi, each = n), mu = rep(bgm, each = n)))
           else dnbinom(d$Y, size = rep(phi, each = n), mu = m, log = TRUE),
      zinb = ifelse(d$Y == 0, log(w + (1 - w) * dnbinom(0, size = rep(phi, each = n), mu = m)),
                    log(1 - w) + dnbinom(d$Y, size = rep(phi, each = n), mu = m, log = TRUE)))
    rowSums(matrix(l, n)) + lpi[k]
  }, numeric(n))
  r <- exp(lk - apply(lk, 1, max))
  r <- r / rowSums(r)
  e <- Reduce(`+`, lapply(seq_len(K), function(k) r[, k] * ms[[k]]))
  as.vector(e * rep(1 - om - beta, each = n) + rep(beta * bgm, each = n))
}

test_that("a count mixture's posterior_epred weighs the clusters' means by the rows' probabilities", {
  for (dist in c("poisson", "nb", "zinb", "background")) {
    d <- mix_data(if (dist == "background") "nb" else dist)
    fam <- if (dist == "background") count_mixture(2, "nb", nstart = 1, background = TRUE) else
      count_mixture(2, dist, nstart = 1)
    fit <- suppressWarnings(svi_fit(Y ~ b + offset(log(sf)), d, family = fam, seed = 1,
                                    control = svi_control(progress = FALSE, max_steps = 400)))
    expect_error(rstantools::posterior_epred(fit), "newdata", class = "svir_error")
    ep <- rstantools::posterior_epred(fit, newdata = d, ndraws = 300)
    expect_identical(dim(ep), c(300L, 480L))
    expect_identical(colnames(ep)[c(1, 81)], c("cell1:g1", "cell1:g2"))
    for (s in c(1, 150, 300)) {
      expect_equal(ep[s, ], mix_epred_hand(fit, d, fit$engine$draws[s, ]), tolerance = 1e-8,
                   ignore_attr = TRUE, label = paste(dist, "draw", s))
    }
    yr <- rstantools::posterior_predict(fit, newdata = d, ndraws = 300, seed = 5)
    expect_identical(rstantools::posterior_predict(fit, newdata = d, ndraws = 300, seed = 5), yr)
    expect_identical(dim(yr), dim(ep))
    expect_true(all(yr >= 0 & yr == round(yr)))
    # the replicates' means are the expected counts', up to Monte Carlo error
    z <- (colMeans(yr) - colMeans(ep)) / sqrt(apply(yr, 2, var) / 300 + 1e-12)
    expect_lt(max(abs(z)), 5, label = dist)
    expect_lt(abs(sd(z) - 1), 0.2, label = dist)
    if (dist == "zinb") {
      # structural zeros: the replicates have the data's share of zeros
      expect_lt(abs(mean(yr == 0) - mean(d$Y == 0)), 0.04)
    }
  }
})

test_that("a Dirichlet-multinomial mixture's replicates keep each row's total", {
  d <- mix_data("nb")
  fit <- suppressWarnings(svi_fit(Y ~ 1, d, family = count_mixture(2, "dirmult", nstart = 1), seed = 1,
                                  control = svi_control(progress = FALSE, max_steps = 400)))
  tot <- rowSums(d$Y)
  ep <- rstantools::posterior_epred(fit, newdata = d, ndraws = 200)
  yr <- rstantools::posterior_predict(fit, newdata = d, ndraws = 200, seed = 1)
  for (s in c(1, 100, 200)) {
    expect_equal(rowSums(matrix(ep[s, ], 80)), tot, ignore_attr = TRUE)
    expect_equal(rowSums(matrix(yr[s, ], 80)), tot, ignore_attr = TRUE)
  }
  z <- (colMeans(yr) - colMeans(ep)) / sqrt(apply(yr, 2, var) / 200 + 1e-12)
  expect_lt(max(abs(z)), 5)
  expect_lt(abs(sd(z) - 1), 0.2)
  # a row surely in a cluster: its expected counts are its total times the
  # cluster's expected proportions
  r <- predict(fit, newdata = d)
  i <- which.max(r[, 1])
  expect_gt(r[i, 1], 0.999)
  pr <- matrix(colMeans(ep), 80)[i, ] / tot[i]
  expect_equal(pr, exp(coef(fit)[1, ]), tolerance = 0.05, ignore_attr = TRUE)
})
