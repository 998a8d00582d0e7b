# QEM's core (src/svir_qem.c; issue 4, first increment): one grouping
# factor, on the CPU, through the internal entry C_svir_qem_r (svi_fit's
# method = "qem" is not wired yet).

qem_setup <- function(family, form = y ~ x1 + x2 + (1 | g), seed = 1) {
  d <- sim_glmm(family$family, n_groups = 20, n_per = 8, seed = seed)
  b <- svir:::svir_build_spec(form, d, family = family)
  b$spec$init_mu <- svir:::svir_init_mu(b$spec, b$info)
  b$spec
}

qem_run <- function(spec, K = 32, steps = 1500, seed = 1, guide = "fullrank") {
  .Call(C_svir_qem_r, spec,
        list(guide = guide, seed = seed, threads = 1L, max_steps = steps, eval_every = 50L,
             K = K, init_scale = 1, lr_schedule = "constant"))
}

svi_ref <- function(spec) {
  .Call(C_svir_fit_r, spec, list(guide = "fullrank", seed = 1, threads = 1L,
                                 num_particles = 8L, stl = 1L, ndraws = 0L, backend = "cpu"))
}

for (fam in list(gaussian(), poisson(), binomial())) {
  test_that(paste("QEM and full-rank SVI agree on a random-intercept GLMM:", fam$family), {
    spec <- qem_setup(fam)
    D <- length(spec$init_mu)
    e <- svi_ref(spec)
    r <- qem_run(spec)
    expect_identical(r$stop_reason, "converged")
    sd_svi <- sqrt(diag(e$L %*% t(e$L)))
    # the posterior means, on the scale of SVI's posterior sd
    expect_lt(max(abs(r$gpar[1:D] - e$mu) / sd_svi), 1)
    # the traced bound: an importance-weighted bound at the end is no worse
    # than SVI's ELBO (beyond Monte Carlo noise)
    expect_gt(mean(tail(r$trace, 50)), e$elbo_final - 2)
  })
}

test_that("QEM's seeds reproduce", {
  spec <- qem_setup(poisson())
  a <- qem_run(spec, K = 8, steps = 30, seed = 3)
  b <- qem_run(spec, K = 8, steps = 30, seed = 3)
  c <- qem_run(spec, K = 8, steps = 30, seed = 4)
  expect_identical(a, b)
  expect_false(identical(a$gpar, c$gpar))
  expect_length(a$trace, 30)
  expect_true(all(is.finite(a$trace)))
})

test_that("QEM refuses what it cannot do, with a clear error", {
  d <- sim_glmm("poisson", n_groups = 10, n_per = 6, crossed = 4, seed = 2)
  b <- svir:::svir_build_spec(y ~ x1 + (1 | g) + (1 | h), d, family = poisson())
  expect_error(qem_run(b$spec, steps = 5), "one grouping factor")
  spec <- qem_setup(poisson())
  expect_error(qem_run(spec, K = 1, steps = 5), "K from 2")
  expect_error(qem_run(spec, K = 1000, steps = 5), "K from 2")
})
