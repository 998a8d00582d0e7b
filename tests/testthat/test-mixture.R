# Count mixtures (family = count_mixture(); src/models/mixture/, R/mixture.R).

# an NB mixture of 3 unequal clusters with markers, tenfold library sizes
# and a batch covariate
sim_mixture <- function(n = 300, p = 40, seed = 3) {
  set.seed(seed)
  z <- rep(1:3, round(n * c(0.5, 1 / 3, 1 / 6)))
  mu <- matrix(rnorm(3 * p, -1, 0.4), 3, p)
  up <- lapply(1:3, function(k) sample(p, 8))
  for (k in 1:3) mu[k, up[[k]]] <- mu[k, up[[k]]] + 2.5
  gam <- rnorm(p, 0, 0.3) # before the draws that depend on n: new rows share it
  sf <- exp(runif(n, log(0.3), log(3)))
  batch <- factor(sample(c("A", "B"), n, TRUE))
  eta <- log(sf) + outer(batch == "B", gam) + mu[z, ]
  d <- data.frame(batch, sf)
  d$Y <- matrix(rnbinom(n * p, size = 5, mu = exp(eta)), n, dimnames = list(NULL, paste0("g", 1:p)))
  list(d = d, z = z, up = up)
}

test_that("the mixture's ELBO gradient matches finite differences", {
  set.seed(1)
  n <- 30
  Y <- matrix(rnbinom(n * 6, size = 3, mu = 4), n)
  d <- data.frame(b = factor(sample(c("a", "b", "c"), n, TRUE)), sf = exp(rnorm(n, 0, 0.3)))
  # the estimate's gradient against its finite differences at a random
  # guide; the estimate returned
  check <- function(fam, bs, label) {
    job <- svir:::svir_mix_build(Y ~ b + offset(log(sf)), d, fam, NULL, "meanfield", "svi",
                                 svi_control(batch_size = bs), "auto", 1, na.omit, NULL)
    D <- length(job$spec$init_mu)
    set.seed(2)
    v <- c(rnorm(D, 0, 0.5), rnorm(D, -1, 0.3))
    ctrl <- modifyList(job$ctrl, list(num_particles = 2L, threads = 1L, stl = 0L))
    f <- function(v) .Call(C_svir_mix_elbo_grad_r, job$spec, ctrl, v, 3)$elbo
    g <- .Call(C_svir_mix_elbo_grad_r, job$spec, ctrl, v, 3)$grad
    expect_lt(max(abs(fd_grad(f, v) - g)) / max(1, max(abs(g))), 1e-6,
              label = paste(label, if (is.null(bs)) "full" else "minibatch"))
    f(v)
  }
  for (dist in c("poisson", "nb", "zinb")) for (bs in list(NULL, 7L)) {
    elbos <- c()
    for (sparse in c(FALSE, TRUE)) {
      d$Y <- if (sparse) Matrix::Matrix(Y, sparse = TRUE) else Y
      elbos <- c(elbos, check(count_mixture(3, dist), bs, paste(dist, if (sparse) "sparse" else "dense")))
    }
    # sparse counts give the dense ones' numbers
    expect_identical(elbos[1], elbos[2])
  }
  # a background per column (its priors from the counts, or from empty
  # droplets), and one cluster
  E <- matrix(rnbinom(50 * 6, size = 3, mu = 2), 50)
  d$Y <- Y
  fams <- list(bg = count_mixture(3, background = TRUE), empties = count_mixture(3, background = E),
               K1 = count_mixture(1), K1bg = count_mixture(1, background = TRUE))
  for (nm in names(fams)) for (bs in list(NULL, 7L)) check(fams[[nm]], bs, nm)
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
  expect_error(count_mixture(K = 0), "K", class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(31)), "too few", class = "svir_error")
  expect_error(count_mixture(dist = "poisson", background = TRUE), "negative binomial", class = "svir_error")
  expect_error(count_mixture(background = matrix(-1, 3, 10)), "background", class = "svir_error")
  E <- matrix(1, 5, 9, dimnames = list(NULL, colnames(s$d$Y)[1:9]))
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2, background = E)), "lacks 1", class = "svir_error")
  expect_error(count_mixture(K = c(3, 3)), "repeated", class = "svir_error")
  expect_error(count_mixture(dist = "zip"), "dist", class = "svir_error")
  expect_error(count_mixture(nstart = 0), "nstart", class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2, "dirmult"), method = "qem"), "dirmult",
               class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2), method = "qem",
                       control = svi_control(batch_size = 20)), "full batches", class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2), method = "laplace"), "SVI or QEM",
               class = "svir_error")
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2), guide = "fullrank"), "mean-field",
               class = "svir_error")
  Y0 <- s$d$Y
  s$d$Y[3, ] <- 0
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2)), "1 row of the count matrix has no counts",
               class = "svir_error")
  s$d$Y <- Y0
  s$d$sf[2] <- 0
  expect_error(svi_fit(Y ~ offset(log(sf)), s$d, family = count_mixture(2)), "size factor", class = "svir_error")
  s$d$Y[1, 1] <- -1
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2)), "non-negative whole numbers", class = "svir_error")
  s$d$Y[1, 1] <- 0.5
  expect_error(svi_fit(Y ~ 1, s$d, family = count_mixture(2)), "whole numbers", class = "svir_error")
})

test_that("predict() gives new rows' cluster probabilities and names missing genes", {
  s <- sim_mixture()
  fit <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = 3, nstart = 1), seed = 1)
  # the fit's own rows through the new-data path: the same numbers
  expect_equal(unname(predict(fit, s$d)), unname(fit$resp), tolerance = 1e-10)
  expect_identical(unname(predict(fit, s$d, type = "class")), unname(clusters(fit)))
  # new cells from the same clusters, their genes shuffled and one more
  s2 <- sim_mixture(n = 120, seed = 3)
  set.seed(9)
  s2$d <- s2$d[sample(nrow(s2$d)), ]
  z2 <- s2$z[as.integer(rownames(s2$d))]
  Y2 <- s2$d$Y[, c(40:1)]
  s2$d$Y <- cbind(Y2, extra = 1)
  cl2 <- predict(fit, s2$d, type = "class")
  expect_gt(adjusted_rand(cl2, z2), 0.9)
  pr <- predict(fit, s2$d)
  expect_equal(dim(pr), c(120L, 3L))
  expect_equal(unname(rowSums(pr)), rep(1, 120), tolerance = 1e-8)
  s2$d$Y <- Y2[, -c(1, 5)]
  expect_error(predict(fit, s2$d), "lacks 2 of the fit's columns", class = "svir_error")
})

test_that("markers() ranks a cluster's raised genes first", {
  s <- sim_mixture()
  fit <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = 3, nstart = 1), seed = 1)
  # fitted cluster k is the k-th largest, as simulated
  expect_gt(adjusted_rand(clusters(fit), s$z), 0.9)
  expect_true(all(diff(as.vector(table(clusters(fit)))) < 0))
  for (k in 1:3) {
    mk <- markers(fit, k)
    top <- as.integer(sub("g", "", mk$column[mk$prob > 0.95 & mk$lfc > 0]))
    # the genes raised in this cluster alone (by 2.5 on the log scale, 3.6 in
    # log2) are found, with a probability near 1
    own <- setdiff(s$up[[k]], unlist(s$up[-k]))
    expect_gt(length(own), 1)
    expect_true(all(own %in% top), label = paste("cluster", k))
    expect_true(all(mk$lower <= mk$lfc & mk$lfc <= mk$upper))
  }
  m12 <- markers(fit, 1, vs = 2)
  expect_identical(nrow(m12), 40L)
  expect_error(markers(fit, 4), "cluster", class = "svir_error")
  expect_error(markers(fit, 1, vs = 1), "vs", class = "svir_error")
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_invisible(plot(fit))
  expect_invisible(plot(fit, "markers"))
  expect_error(plot(fit, "criteria"), "one", class = "svir_error")
})

test_that("several K: each fitted, the largest ELBO chosen, the table kept", {
  s <- sim_mixture()
  fit <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = 2:4, nstart = 1), seed = 1)
  cr <- fit$criteria
  expect_identical(cr$K, 2:4)
  expect_identical(fit$K, 3L)
  expect_identical(cr$chosen, cr$K == 3L)
  expect_equal(cr$criterion, cr$elbo + lgamma(cr$K + 1))
  expect_identical(which.max(cr$criterion), 2L)
  expect_true(all(cr$ICL >= cr$BIC))
  expect_gt(adjusted_rand(clusters(fit), s$z), 0.9)
  expect_output(print(fit), "K = 3 chosen by the ELBO", fixed = TRUE)
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_invisible(plot(fit, "criteria"))
})

# ZINB: a structural zero with probability omega_j per gene, else the
# cluster's NB
test_that("a zero-inflated mixture recovers its zero-inflation probabilities", {
  set.seed(11)
  n <- 800
  p <- 20
  z <- rep(1:2, c(500, 300))
  mu <- rbind(rep(c(1.5, 0), c(10, 10)), rep(c(0, 1.5), c(10, 10))) + 0.5
  omega <- rep(c(0, 0.1, 0.3, 0.5), 5)
  Y <- matrix(rnbinom(n * p, size = 5, mu = exp(mu[z, ])), n)
  Y[matrix(runif(n * p) < rep(omega, each = n), n)] <- 0
  d <- data.frame(row = seq_len(n))
  d$Y <- Y
  for (method in c("qem", "svi")) {
    fit <- svi_fit(Y ~ 1, d, family = count_mixture(K = 2, dist = "zinb", nstart = 1), seed = 1,
                   method = method, control = svi_control(K = 8))
    expect_gt(adjusted_rand(clusters(fit), z), 0.95)
    w <- fit$zero_inflation
    expect_length(w, p)
    # each within 0.07 of the truth, and ordered as the truth on average
    expect_lt(max(abs(w - omega)), 0.07, label = method)
    expect_true(all(diff(tapply(w, omega, mean)) > 0.05))
  }
  # the NB fit of the same data puts the extra zeros into its dispersions
  fn <- svi_fit(Y ~ 1, d, family = count_mixture(K = 2, dist = "nb", nstart = 1), seed = 1)
  expect_gt(as.numeric(logLik(fit)), as.numeric(logLik(fn)))
  expect_output(print(fit), "zero-inflated negative binomial", fixed = TRUE)
})

# The engine's likelihood against R's own densities: each row's log sum_k
# pi_k p(y_i | k) at the guide's means (fit$ll_rows), recomputed from
# dpois, dnbinom and the Dirichlet-multinomial's formula.
test_that("each distribution's likelihood is R's density", {
  set.seed(4)
  n <- 40
  p <- 5
  d <- data.frame(b = factor(rep(c("u", "v"), n / 2)), sf = exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rnbinom(n * p, size = 2, mu = 3), n)
  K <- 2
  for (dist in c("poisson", "nb", "zinb", "dirmult", "background")) {
    f <- if (dist == "dirmult") Y ~ 1 else Y ~ b + offset(log(sf))
    fam <- if (dist == "background") count_mixture(K, background = TRUE, nstart = 1) else
      count_mixture(K, dist, nstart = 1)
    fit <- suppressWarnings(svi_fit(f, d, family = fam, seed = 1, control = svi_control(max_steps = 200)))
    D <- length(fit$engine$vpar) / 2
    dens <- function(th) {
      mu <- matrix(th[seq_len(K * p)], K, p, byrow = TRUE)
      off <- K * p + 2 * p
      gam <- if (dist == "dirmult") 0 else th[off + seq_len(p)]
      off <- off + if (dist == "dirmult") 0 else p
      phi <- if (dist %in% c("nb", "zinb", "background")) exp(th[off + seq_len(p)])
      off <- off + length(phi)
      om <- if (dist == "zinb") plogis(th[off + seq_len(p)])
      # the background: NB(exp(b_j), psi_j) with probability beta_j
      bgm <- exp(th[off + seq_len(p)])
      psi <- exp(th[off + p + seq_len(p)])
      beta <- plogis(th[off + 2 * p + seq_len(p)])
      eta <- c(th[D - (K - 1) + seq_len(K - 1)], 0)
      lpi <- eta - log(sum(exp(eta)))
      Y <- d$Y
      lk <- vapply(seq_len(K), function(k) {
        if (dist == "dirmult") {
          al <- exp(mu[k, ])
          N <- rowSums(Y)
          return(lgamma(N + 1) - rowSums(lgamma(Y + 1)) + lgamma(sum(al)) - lgamma(N + sum(al)) +
                   rowSums(lgamma(sweep(Y, 2, al, "+"))) - sum(lgamma(al)))
        }
        # the covariates less their means
        m <- exp(log(d$sf) + outer((d$b == "v") - 0.5, gam) + matrix(mu[k, ], n, p, byrow = TRUE))
        l <- switch(dist,
          poisson = dpois(Y, m, log = TRUE),
          nb = dnbinom(Y, size = rep(phi, each = n), mu = m, log = TRUE),
          background = log((1 - rep(beta, each = n)) * dnbinom(Y, size = rep(phi, each = n), mu = m) +
                             rep(beta, each = n) * dnbinom(Y, size = rep(psi, each = n), mu = rep(bgm, each = n))),
          zinb = {
            w <- rep(om, each = n)
            ifelse(Y == 0, log(w + (1 - w) * dnbinom(0, size = rep(phi, each = n), mu = m)),
                   log(1 - w) + dnbinom(Y, size = rep(phi, each = n), mu = m, log = TRUE))
          })
        rowSums(matrix(l, n))
      }, numeric(n))
      apply(sweep(lk, 2, lpi, "+"), 1, function(v) max(v) + log(sum(exp(v - max(v)))))
    }
    expect_equal(fit$ll_rows, dens(fit$engine$vpar[seq_len(D)]), tolerance = 1e-9, label = dist)
    # the rows' log densities under each posterior draw (log_lik's and the
    # held-out criterion's), for the rows as new data
    u <- svir:::svir_mix_new_rows(fit, d, 3, TRUE, stop)
    expect_identical(dim(u$loglik), c(3L, as.integer(n)))
    for (s in 1:3) {
      expect_equal(u$loglik[s, ], dens(fit$engine$draws[s, ]), tolerance = 1e-9,
                   label = paste(dist, "draw", s))
    }
  }
})

# Dirichlet-multinomial clusters (Holmes, Harris and Quince 2012): rows'
# proportions drawn from cluster Dirichlets, counts multinomial given them
test_that("Dirichlet-multinomial clusters are recovered", {
  set.seed(6)
  n <- 300
  p <- 25
  z <- rep(1:3, c(150, 100, 50))
  base <- rep(1, p)
  al <- rbind(base, base, base)
  al[1, 1:5] <- 8
  al[2, 6:10] <- 8
  al[3, 11:15] <- 8
  al <- al * 3
  Y <- t(vapply(seq_len(n), function(i) {
    g <- rgamma(p, al[z[i], ])
    rmultinom(1, size = 200 + rpois(1, 300), prob = g / sum(g))
  }, numeric(p)))
  d <- data.frame(r = seq_len(n))
  d$Y <- Y
  fit <- svi_fit(Y ~ 1, d, family = count_mixture(K = 3, dist = "dirmult", nstart = 1), seed = 1)
  expect_gt(adjusted_rand(clusters(fit), z), 0.95)
  # coef(): the posterior means of the log expected proportions; each
  # draw's proportions sum to 1, the exp of their means nearly so
  expect_equal(unname(apply(exp(fit$mu_draws), c(1, 2), sum)), matrix(1, nrow(fit$mu_draws), 3),
               tolerance = 1e-12)
  expect_equal(unname(rowSums(exp(coef(fit)))), rep(1, 3), tolerance = 0.01)
  est <- exp(coef(fit))
  expect_lt(max(abs(est - al / rowSums(al))), 0.03)
  expect_output(print(fit), "Dirichlet-multinomial", fixed = TRUE)
  d$x <- rnorm(n)
  expect_error(svi_fit(Y ~ x, d, family = count_mixture(K = 3, dist = "dirmult")), "no covariates",
               class = "svir_error")
})

# CITE-seq-like protein counts: each count is background, NB(exp(b_j), 10)
# with probability beta_j, else its cluster's NB (size 5); 4 of 12
# proteins raised by 3.5 on the log scale in each cluster, 1 above the
# background elsewhere; empty droplets from the background alone
sim_cite <- function(n = 800, p = 12, ne = 400, seed = 5) {
  set.seed(seed)
  z <- rep(1:3, round(n * c(0.5, 0.3, 0.2)))
  b <- log(runif(p, 5, 15))
  beta <- runif(p, 0.2, 0.6)
  mu <- matrix(b + 1, 3, p, byrow = TRUE)
  for (k in 1:3) mu[k, (k - 1) * 4 + 1:4] <- b[(k - 1) * 4 + 1:4] + 3.5
  isbg <- matrix(runif(n * p) < rep(beta, each = n), n)
  fgc <- matrix(rnbinom(n * p, size = 5, mu = exp(mu[z, ])), n)
  bgc <- matrix(rnbinom(n * p, size = 10, mu = rep(exp(b), each = n)), n)
  Y <- ifelse(isbg, bgc, fgc)
  colnames(Y) <- paste0("ADT", 1:p)
  E <- matrix(rnbinom(ne * p, size = 10, mu = rep(exp(b), each = ne)), ne,
              dimnames = list(NULL, colnames(Y)))
  # each count's probability of being foreground under the truth
  lF <- matrix(dnbinom(Y, size = 5, mu = exp(mu[z, ]), log = TRUE), n) + rep(log(1 - beta), each = n)
  lG <- matrix(dnbinom(Y, size = 10, mu = rep(exp(b), each = n), log = TRUE), n) + rep(log(beta), each = n)
  d <- data.frame(row.names = seq_len(n))
  d$Y <- Y
  list(d = d, E = E, z = z, beta = beta, b = b, isbg = isbg, fg_true = 1 / (1 + exp(lG - lF)))
}

test_that("the background model recovers each count's foreground probability", {
  s <- sim_cite()
  auc <- function(sc, lab) {
    r <- rank(sc)
    n1 <- sum(lab)
    (sum(r[lab]) - n1 * (n1 + 1) / 2) / (n1 * (length(lab) - n1))
  }
  for (how in c("empties", "counts", "qem")) {
    bg <- if (how == "counts") TRUE else s$E
    fit <- svi_fit(Y ~ 1, s$d, family = count_mixture(K = 3, background = bg, nstart = 1), seed = 1,
                   method = if (how == "qem") "qem" else "svi", control = svi_control(K = 8))
    expect_gt(adjusted_rand(clusters(fit), s$z), 0.95)
    expect_identical(dim(fit$foreground), dim(s$d$Y))
    # against the truth's probabilities: 0.015 on average by hand (1200
    # rows); every count foreground would be 0.39 off
    expect_lt(mean(abs(fit$foreground - s$fg_true)), 0.03)
    expect_gt(mean(abs(1 - s$fg_true)), 0.3)
    # telling the simulated foreground from the background as well as the
    # truth's probabilities do (0.964 against 0.965 by hand)
    expect_gt(auc(fit$foreground, !s$isbg), auc(s$fg_true, !s$isbg) - 0.01)
    expect_lt(max(abs(fit$background$fraction - s$beta)), 0.08)
    expect_lt(max(abs(log(fit$background$mean) - s$b)), 0.15)
    expect_output(print(fit), "Background per column", fixed = TRUE)
  }
  expect_identical(fit$method, "qem")
  # new droplets: their clusters from the fit's draws
  expect_gt(adjusted_rand(predict(fit, s$d, type = "class"), s$z), 0.95)
})

test_that("one cluster is one negative binomial per column", {
  set.seed(4)
  Y <- matrix(rnbinom(200 * 5, size = 4, mu = rep(c(1, 3, 10, 30, 0.5), each = 200)), 200)
  d <- data.frame(r = 1:200)
  d$Y <- Y
  fit <- svi_fit(Y ~ 1, d, family = count_mixture(K = 1, nstart = 1), seed = 1)
  expect_identical(unname(clusters(fit)), rep(1L, 200))
  expect_equal(unname(exp(coef(fit)[1, ])), colMeans(Y), tolerance = 0.1)
  expect_error(markers(fit, 1), "one cluster", class = "svir_error")
})

test_that("QEM and minibatches agree with SVI on well-separated clusters, whatever the threads", {
  s <- sim_mixture()
  f <- Y ~ batch + offset(log(sf))
  fit <- function(method, threads = 1L) {
    svi_fit(f, s$d, family = count_mixture(K = 3, nstart = 1), method = method, seed = 1,
            control = svi_control(K = 8, threads = threads))
  }
  fs <- fit("svi")
  fq <- fit("qem")
  expect_identical(fq$method, "qem")
  expect_output(print(fq), "fit by QEM", fixed = TRUE)
  expect_identical(unname(clusters(fq)), unname(clusters(fs)))
  expect_gt(adjusted_rand(clusters(fq), s$z), 0.95)
  # the cluster log-means in SVI's posterior sds: 0.33 at most and 0.08 at
  # the median by hand against a long SVI fit (20000 steps, 4 particles);
  # with a treatment-coded batch not centred, QEM's coordinate-wise
  # updates had stopped 1.4 sds away
  sd_s <- apply(fs$mu_draws, c(2, 3), sd)
  z <- abs(coef(fq) - coef(fs)) / sd_s
  expect_lt(max(z), 1)
  expect_lt(median(z), 0.25)
  r <- apply(fq$mu_draws, c(2, 3), sd) / sd_s
  expect_true(all(r > 0.6 & r < 1.5))
  lp_s <- log(fs$phi_draws)
  expect_lt(max(abs(colMeans(log(fq$phi_draws)) - colMeans(lp_s)) / apply(lp_s, 2, sd)), 1)
  expect_equal(colMeans(fq$pi_draws), colMeans(fs$pi_draws), tolerance = 0.02)
  # QEM's final ELBO: SVI's estimator at its final approximation (1.9
  # nats below the long SVI fit's by hand)
  expect_lt(abs(fq$elbo_final - fs$elbo_final), 10)
  # minibatches of 100 rows: the same clusters, the means within SVI's sds
  fm <- svi_fit(f, s$d, family = count_mixture(K = 3, nstart = 1), seed = 1,
                control = svi_control(batch_size = 100))
  expect_identical(unname(clusters(fm)), unname(clusters(fs)))
  zm <- abs(coef(fm) - coef(fs)) / sd_s
  expect_lt(median(zm), 0.25)
  expect_lt(max(zm), 1)
  # two threads: the same fits up to the order of sums
  expect_equal(coef(fit("qem", 2L)), coef(fq), tolerance = 1e-8)
  expect_equal(coef(fit("svi", 2L)), coef(fs), tolerance = 1e-8)
})

test_that("5000 cells x 1000 genes in 8 clusters: ARI above 0.9 and K = 8 chosen", {
  skip_on_cran() # about 90 s on two cores
  # single-cell-like NB counts (size 2): cluster shares proportional to
  # 1..8, library sizes over a tenfold range, a batch with gene effects, 25
  # marker genes per cluster raised by 2 on the log scale, about 90% zeros;
  # sparse input. The truth's own labels (each row's most probable cluster
  # under the simulated parameters) have ARI 0.971 (by hand).
  set.seed(1)
  n <- 5000
  p <- 1000
  K <- 8
  sp <- sim_sc_params(n, p, K, base = -2.9, noise = 0.1, nup = 25)
  z <- sp$z
  lin <- log(sp$sf) + outer(sp$batch == "B", sp$gam)
  Y <- matrix(rnbinom(n * p, size = 2, mu = exp(lin + sp$mu[z, ])), n, dimnames = list(NULL, paste0("g", 1:p)))
  expect_gt(mean(Y == 0), 0.87)
  d <- data.frame(batch = sp$batch, sf = sp$sf)
  d$Y <- Matrix::Matrix(Y, sparse = TRUE)
  fit <- svi_fit(Y ~ batch + offset(log(sf)), d, family = count_mixture(K = 6:10, nstart = 1), seed = 1)
  # ELBO + log K!: 8 by 381 nats over 9, 638 over 10, 1605 over 7 and
  # 3898 over 6 (by hand; ARI 0.968; minibatches of 64 rows)
  expect_identical(fit$K, 8L)
  expect_identical(fit$criteria$K[fit$criteria$chosen], 8L)
  expect_gt(adjusted_rand(clusters(fit), z), 0.9)
  expect_true(all(diff(colSums(fit$resp)) <= 0))
})

# The device (src/cuda/mix_dev.cu): each SVI step's batch log-likelihood and
# gradient there, the CPU's driver, draws and guide; refused where it cannot
# run, and the same fit as the CPU's where it can (skipped without a GPU).
mix_cuda_ok <- function() {
  b <- svir_backends()
  isTRUE(b$available[b$backend == "cuda"])
}

test_that("count_mixture() on backend = 'cuda' is refused where it cannot run", {
  s <- sim_mixture(n = 120, p = 10)
  err <- function(...) tryCatch(svi_fit(..., seed = 1), error = identity)
  e <- err(Y ~ 1, s$d, family = count_mixture(K = 2, dist = "dirmult"), backend = "cuda")
  expect_s3_class(e, "svir_error")
  expect_match(conditionMessage(e), "dist = \"dirmult\") runs on the CPU only", fixed = TRUE)
  e <- err(Y ~ 1, s$d, family = count_mixture(K = 2), method = "qem", backend = "cuda")
  expect_match(conditionMessage(e), "method = \"qem\" for count_mixture() runs on the CPU only",
               fixed = TRUE)
  skip_if(mix_cuda_ok(), "a CUDA device is present")
  e <- err(Y ~ 1, s$d, family = count_mixture(K = 2), backend = "cuda")
  expect_match(conditionMessage(e), "needs a usable CUDA device", fixed = TRUE)
})

test_that("count mixtures on the device take the CPU's steps (NB, ZINB, Poisson, background)", {
  skip_if_not(mix_cuda_ok(), "no CUDA device")
  s <- sim_mixture(n = 400, p = 30)
  ctl <- function(bs = NULL) svi_control(max_steps = 300, eval_every = 50, batch_size = bs, progress = FALSE)
  same <- function(f, data, fam, bs = NULL) {
    fits <- lapply(c("cpu", "cuda"), function(be)
      suppressWarnings(svi_fit(f, data, family = fam, control = ctl(bs), backend = be, seed = 4)))
    expect_identical(fits[[2]]$backend, "cuda")
    expect_identical(fits[[2]]$steps, fits[[1]]$steps)
    expect_identical(fits[[2]]$stop_reason, fits[[1]]$stop_reason)
    expect_equal(fits[[2]]$elbo, fits[[1]]$elbo, tolerance = 1e-6)
    expect_equal(coef(fits[[2]]), coef(fits[[1]]), tolerance = 1e-6)
    expect_identical(clusters(fits[[2]]), clusters(fits[[1]]))
  }
  f <- Y ~ batch + offset(log(sf))
  for (dist in c("nb", "zinb", "poisson")) same(f, s$d, count_mixture(K = 3, dist = dist, nstart = 1))
  same(f, s$d, count_mixture(K = 3, nstart = 1), bs = 100)
  sp <- s$d
  sp$Y <- Matrix::Matrix(s$d$Y, sparse = TRUE)
  same(f, sp, count_mixture(K = 3, nstart = 1))
  cite <- sim_cite(n = 300, p = 8, ne = 100)
  same(Y ~ 1, cite$d, count_mixture(K = 3, nstart = 1, background = cite$E))
})
