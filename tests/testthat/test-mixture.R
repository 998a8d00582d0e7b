# Count mixtures (family = count_mixture(); src/models/mixture/, R/mixture.R).

# an NB mixture of 3 unequal clusters with markers, tenfold library sizes
# and a batch covariate
sim_mixture <- function(n = 300, p = 40, seed = 3) {
  set.seed(seed)
  z <- rep(1:3, round(n * c(0.5, 1 / 3, 1 / 6)))
  mu <- matrix(rnorm(3 * p, -1, 0.4), 3, p)
  for (k in 1:3) mu[k, sample(p, 6)] <- mu[k, sample(p, 6)] + 2
  sf <- exp(runif(n, log(0.3), log(3)))
  batch <- factor(sample(c("A", "B"), n, TRUE))
  eta <- log(sf) + outer(batch == "B", rnorm(p, 0, 0.3)) + mu[z, ]
  d <- data.frame(batch, sf)
  d$Y <- matrix(rnbinom(n * p, size = 5, mu = exp(eta)), n, dimnames = list(NULL, paste0("g", 1:p)))
  list(d = d, z = z)
}

adjusted_rand <- function(a, b) {
  tab <- table(a, b)
  c2 <- function(x) sum(x * (x - 1) / 2)
  s <- c2(tab)
  sa <- c2(rowSums(tab))
  sb <- c2(colSums(tab))
  e <- sa * sb / c2(sum(tab))
  (s - e) / ((sa + sb) / 2 - e)
}

test_that("the mixture's ELBO gradient matches finite differences", {
  set.seed(1)
  n <- 30
  Y <- matrix(rnbinom(n * 6, size = 3, mu = 4), n)
  d <- data.frame(b = factor(sample(c("a", "b", "c"), n, TRUE)), sf = exp(rnorm(n, 0, 0.3)))
  for (dist in c("poisson", "nb")) for (bs in list(NULL, 7L)) {
    elbos <- c()
    for (sparse in c(FALSE, TRUE)) {
      d$Y <- if (sparse) Matrix::Matrix(Y, sparse = TRUE) else Y
      job <- svir:::svir_mix_build(Y ~ b + offset(log(sf)), d, count_mixture(3, dist), NULL,
                                   "meanfield", "svi", svi_control(batch_size = bs), "auto", 1,
                                   na.omit, NULL)
      D <- length(job$spec$init_mu)
      set.seed(2)
      v <- c(rnorm(D, 0, 0.5), rnorm(D, -1, 0.3))
      ctrl <- modifyList(job$ctrl, list(num_particles = 2L, threads = 1L, stl = 0L))
      f <- function(v) .Call(C_svir_mix_elbo_grad_r, job$spec, ctrl, v, 3)$elbo
      g <- .Call(C_svir_mix_elbo_grad_r, job$spec, ctrl, v, 3)$grad
      expect_lt(max(abs(fd_grad(f, v) - g)) / max(1, max(abs(g))), 1e-6,
                label = paste(dist, if (sparse) "sparse" else "dense", if (is.null(bs)) "full" else "minibatch"))
      elbos <- c(elbos, f(v))
    }
    # sparse counts give the dense ones' numbers
    expect_identical(elbos[1], elbos[2])
  }
})

test_that("a count mixture recovers its clusters, numbered by size", {
  s <- sim_mixture()
  fit <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = 3, nstart = 2), seed = 1)
  expect_s3_class(fit, "svi_mixture")
  cl <- clusters(fit)
  expect_gt(adjusted_rand(cl, s$z), 0.9)
  expect_true(all(diff(as.vector(table(factor(cl, 1:3)))) <= 0))
  expect_equal(dim(coef(fit)), c(3L, 40L))
  expect_identical(colnames(coef(fit)), paste0("g", 1:40))
  ci <- confint(fit, parm = c("g1", "g2"))
  expect_equal(nrow(ci), 6L)
  expect_true(all(ci$lower < ci$estimate & ci$estimate < ci$upper))
  expect_equal(colSums(fit$resp), colSums(fit$resp)[order(-colSums(fit$resp))])
  expect_equal(unname(rowSums(fit$resp)), rep(1, 300), tolerance = 1e-8)
  expect_identical(nrow(fit$starts), 2L)
  expect_identical(sum(fit$starts$kept), 1L)
  expect_identical(attr(logLik(fit), "df"), fit$npar)
  expect_identical(nobs(fit), 300L)
  expect_output(print(summary(fit)), "Starts (k-means++ on principal components)", fixed = TRUE)
  # the same fit from sparse counts
  s$d$Y <- Matrix::Matrix(s$d$Y, sparse = TRUE)
  fs <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = 3, nstart = 2), seed = 1)
  expect_identical(clusters(fs), cl)
  expect_identical(fs$elbo_final, fit$elbo_final)
})

test_that("count_mixture() refuses what it does not fit, naming the argument", {
  s <- sim_mixture(n = 60, p = 10)
  expect_error(count_mixture(K = 1), "K", class = "svir_error")
  expect_error(count_mixture(K = 2:4), "one number in this version", class = "svir_error")
  expect_error(count_mixture(dist = "zinb"), "dist", class = "svir_error")
  expect_error(count_mixture(nstart = 0), "nstart", class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2), method = "qem"), "SVI", class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2), guide = "fullrank"), "mean-field",
               class = "svir_error")
  s$d$Y[1, 1] <- 0.5
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2)), "whole numbers", class = "svir_error")
})
