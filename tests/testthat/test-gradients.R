# Finite-difference checks of the hand-derived gradients, for every family x
# link x guide, full batch and minibatch.

for (cs in family_cases) {
  fam_lab <- paste(cs$family$family, cs$family$link)
  d <- sim_glmm(cs$sim, n_groups = 6, n_per = 8, crossed = 4, seed = 3)
  built <- svir:::svir_build_spec(y ~ x1 + x2 + (x1 | g) + (1 | h), d, family = cs$family)
  spec <- built$spec
  for (guide in c("meanfield", "fullrank")) {
    for (bs in list(NULL, 4L)) {
      lab <- paste(fam_lab, guide, if (is.null(bs)) "full batch" else "minibatch")
      test_that(paste("ELBO gradient matches finite differences:", lab), {
        ctrl <- list(guide = guide, seed = 11, threads = 1L, num_particles = 2L, stl = 0L,
                     batch_size = bs)
        v <- rand_vpar(spec, guide)
        f <- function(v) .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, 5)$elbo
        g <- .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, 5)$grad
        num <- fd_grad(f, v)
        expect_true(all(is.finite(g)))
        expect_lt(max(abs(num - g)) / max(1, max(abs(num))), 1e-6)
        if (!is.null(bs)) {
          # locals of groups absent from the minibatch get no gradient
          expect_true(any(g == 0))
        }
      })
    }
  }
  # random intercepts only: the engine's specialised loop, with the run
  # accumulation for g (the data are sorted by g) and an offset
  d_int <- d
  d_int$o <- 0.1 * d_int$x2
  spec_int <- svir:::svir_build_spec(y ~ x1 + (1 | g) + (1 | h) + offset(o), d_int,
                                     family = cs$family)$spec
  # sorted by the factor with fewer levels, which lme4 puts second, and
  # shuffled within it: the loop keeps h in slot 0 of its positions
  set.seed(10)
  d_h <- d_int[order(d_int$h, runif(nrow(d_int))), ]
  spec_int2 <- svir:::svir_build_spec(y ~ x1 + (1 | g) + (1 | h) + offset(o), d_h,
                                      family = cs$family)$spec
  # and without an intercept column (the loop then reads every column of X)
  spec_noint <- svir:::svir_build_spec(y ~ 0 + x1 + x2 + (1 | g), d_int, family = cs$family)$spec
  for (bs in list(NULL, 5L)) {
    lab <- paste(fam_lab, "random intercepts", if (is.null(bs)) "full batch" else "minibatch")
    test_that(paste("ELBO gradient matches finite differences:", lab), {
      ctrl <- list(guide = "meanfield", seed = 7, threads = 1L, num_particles = 2L, stl = 0L,
                   batch_size = bs)
      for (sp in list(spec_int, spec_int2, spec_noint)) {
        v <- rand_vpar(sp, "meanfield")
        f <- function(v) .Call(svir:::C_svir_elbo_grad_r, sp, ctrl, v, 3)$elbo
        g <- .Call(svir:::C_svir_elbo_grad_r, sp, ctrl, v, 3)$grad
        expect_true(all(is.finite(g)))
        expect_lt(max(abs(fd_grad(f, v) - g)) / max(1, max(abs(g))), 1e-6)
      }
    })
  }
  test_that(paste("the run accumulation gives the same ELBO as unsorted data:", fam_lab), {
    # the rows shuffled: no factor runs any more, so every term goes through
    # memory; the model and the noise (indexed by group) are the same
    set.seed(9)
    d_shuf <- d_int[sample(nrow(d_int)), ]
    ctrl <- list(guide = "meanfield", seed = 7, threads = 1L, num_particles = 2L, stl = 0L)
    f <- y ~ x1 + (1 | g) + (1 | h) + offset(o)
    for (d_sorted in list(d_int, d_h)) {
      sp <- svir:::svir_build_spec(f, d_sorted, family = cs$family)$spec
      sp_shuf <- svir:::svir_build_spec(f, d_shuf, family = cs$family)$spec
      v <- rand_vpar(sp, "meanfield")
      a <- .Call(svir:::C_svir_elbo_grad_r, sp, ctrl, v, 3)
      b <- .Call(svir:::C_svir_elbo_grad_r, sp_shuf, ctrl, v, 3)
      expect_equal(a$elbo, b$elbo, tolerance = 1e-12)
      expect_equal(a$grad, b$grad, tolerance = 1e-10)
    }
  })
  test_that(paste("blocked log-likelihood of draws matches the log joint's:", fam_lab), {
    for (sp in list(spec, spec_int, spec_noint)) {
      D <- length(sp$prior_type)
      k <- 11 # more than one block of draws, the last one partly filled
      set.seed(6)
      theta <- matrix(rnorm(D * k, sd = 0.3), D)
      z <- lapply(sp$terms, function(t) array(rnorm(t$ngroups * ncol(t$Z) * k),
                                              c(t$ngroups, ncol(t$Z), k)))
      ref <- vapply(seq_len(k), function(s) {
        .Call(svir:::C_svir_logdensity_r, sp, theta[, s],
              lapply(z, function(a) matrix(a[, , s], dim(a)[1])))$loglik
      }, numeric(1))
      got <- .Call(svir:::C_svir_loglik_block_r, sp, theta, z)
      expect_equal(got, ref, tolerance = 1e-12)
      expect_gt(sd(ref), 0)
    }
  })
  test_that(paste("log joint gradient matches finite differences:", fam_lab), {
    D <- length(spec$prior_type)
    set.seed(4)
    theta <- rnorm(D, sd = 0.3)
    z <- lapply(spec$terms, function(t) matrix(rnorm(t$ngroups * ncol(t$Z)), t$ngroups))
    r <- .Call(svir:::C_svir_logdensity_r, spec, theta, z)
    num_t <- fd_grad(function(v) .Call(svir:::C_svir_logdensity_r, spec, v, z)$logp, theta)
    expect_lt(max(abs(num_t - r$grad_theta)) / max(1, abs(num_t)), 1e-6)
    zv <- unlist(z)
    relist_z <- function(v) {
      out <- z
      k <- 0
      for (t in seq_along(z)) {
        len <- length(z[[t]])
        out[[t]][] <- v[k + seq_len(len)]
        k <- k + len
      }
      out
    }
    num_z <- fd_grad(function(v) .Call(svir:::C_svir_logdensity_r, spec, theta, relist_z(v))$logp, zv)
    expect_lt(max(abs(num_z - unlist(r$grad_z))) / max(1, abs(num_z)), 1e-6)
  })
}

test_that("three-way correlated random effects (LKJ transform) have exact gradients", {
  set.seed(5)
  d <- sim_glmm("poisson", n_groups = 5, n_per = 10, seed = 5)
  built <- svir:::svir_build_spec(y ~ x1 + (x1 + x2 | g), d, family = poisson(),
                                  prior = svi_prior(cor = lkj(2)))
  spec <- built$spec
  for (guide in c("meanfield", "fullrank")) {
    ctrl <- list(guide = guide, seed = 3, threads = 1L, stl = 0L)
    v <- rand_vpar(spec, guide, sd = 0.5)
    f <- function(v) .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, 2)$elbo
    g <- .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, 2)$grad
    expect_lt(max(abs(fd_grad(f, v) - g)) / max(1, abs(g)), 1e-6)
  }
})

test_that("path-derivative (stl) gradients are unbiased for the analytic ones", {
  d <- sim_glmm("poisson", n_groups = 4, n_per = 6, seed = 8)
  spec_slope <- svir:::svir_build_spec(y ~ x1 + (x1 | g), d, family = poisson())$spec
  # random intercepts alone: full batches take the engine's flat q = 1 loops
  spec_q1 <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  for (spec in list(spec_slope, spec_q1)) for (guide in c("meanfield", "fullrank")) {
    for (bs in list(NULL, 8L)) {
      v <- rand_vpar(spec, guide, sd = 0.2)
      ctrl0 <- list(guide = guide, seed = 9, threads = 1L, stl = 0L, batch_size = bs)
      ctrl1 <- modifyList(ctrl0, list(stl = 1L))
      diffs <- vapply(1:3000, function(s) {
        .Call(svir:::C_svir_elbo_grad_r, spec, ctrl1, v, s)$grad -
          .Call(svir:::C_svir_elbo_grad_r, spec, ctrl0, v, s)$grad
      }, numeric(length(v)))
      # a rare draw far in the tails overflows (the engine rejects such steps)
      ok <- colSums(!is.finite(diffs)) == 0
      expect_gt(mean(ok), 0.95)
      diffs <- diffs[, ok]
      # same noise, so the difference is the zero-mean score term alone
      z <- rowMeans(diffs) / (apply(diffs, 1, sd) / sqrt(ncol(diffs)) + 1e-12)
      expect_lt(max(abs(z)), 4.5)
      expect_gt(max(apply(diffs, 1, sd)), 0) # the two estimators do differ
    }
  }
})

test_that("a term folded into the term nested in it gives the unfolded ELBO and gradient", {
  # full batches of random intercepts: (1 | a) rides on (1 | a:b) in the pass
  # over the observations (fold_init in glmm_svi.c); prior weights of 1 take
  # the general loop, which does not fold
  nested <- function(na, nb, seed) {
    set.seed(seed)
    d <- expand.grid(r = 1:4, b = seq_len(nb), a = seq_len(na))
    d$a <- factor(d$a)
    d$b <- factor(d$b)
    d$h <- factor(sample(1:7, nrow(d), TRUE))
    d$x1 <- rnorm(nrow(d))
    ab <- interaction(d$a, d$b)
    attr(d, "eta") <- 0.3 + 0.5 * d$x1 + rnorm(na, sd = 0.7)[d$a] +
      rnorm(nlevels(ab), sd = 0.4)[ab] + rnorm(7, sd = 0.3)[d$h]
    d
  }
  same <- function(d, cs, threads) {
    eta <- attr(d, "eta")
    d$y <- switch(cs$sim, gaussian = eta + rnorm(nrow(d)), binomial = rbinom(nrow(d), 1, plogis(eta)),
                  poisson = rpois(nrow(d), exp(eta)), negbin = rnbinom(nrow(d), size = 3, mu = exp(eta)))
    spec <- svir:::svir_build_spec(y ~ x1 + (1 | a/b) + (1 | h), d, family = cs$family)$spec
    ws <- spec
    ws$weights <- rep(1, length(spec$y))
    v <- rand_vpar(spec, "meanfield")
    ctrl <- list(guide = "meanfield", seed = 11, threads = threads, num_particles = 2L, stl = 0L)
    a <- .Call(svir:::C_svir_elbo_grad_r, spec, ctrl, v, 5)
    b <- .Call(svir:::C_svir_elbo_grad_r, ws, ctrl, v, 5)
    expect_equal(a$elbo, b$elbo, tolerance = 1e-10)
    expect_equal(a$grad, b$grad, tolerance = 1e-9)
    spec
  }
  small <- nested(6, 5, 7)
  for (cs in family_cases) {
    spec <- same(small, cs, 1L)
    expect_lt(elbo_grad_check(spec, "meanfield")$err, 1e-6)
  }
  # two threads (at least 4096 rows each), each folding its own sums
  big <- nested(30, 40, 8)
  for (cs in family_cases[c(1, 5)]) same(big, cs, 2L)
})
