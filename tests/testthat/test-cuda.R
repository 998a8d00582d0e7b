# The CUDA backend's pieces so far: the observation pass and the normals on
# the device, against the CPU. The parity tests need a GPU and skip without
# one; the CPU reference and the error paths run everywhere (CI builds with
# the CUDA toolkit but has no driver or GPU).

cuda_ok <- function() {
  b <- svir_backends()
  isTRUE(b$available[b$backend == "cuda"])
}

cuda_built <- function() {
  b <- svir_backends()
  !grepl("built without CUDA", b$detail[b$backend == "cuda"])
}

obs_inputs <- function(spec, seed = 1) {
  set.seed(seed)
  nz <- sum(vapply(spec$terms, function(t) t$ngroups * ncol(t$Z), numeric(1)))
  list(beta = rnorm(ncol(spec$X), sd = 0.3), b = rnorm(nz, sd = 0.4), aux = c(0.9, 2.5))
}

obs_pass <- function(spec, inp, cuda) {
  .Call(C_svir_obs_pass_r, spec, inp$beta, inp$b, inp$aux, cuda)
}

test_that("the CPU reference pass is the log-likelihood and its gradients", {
  d <- sim_glmm("poisson", n_groups = 7, n_per = 9, crossed = 3, seed = 2)
  spec <- svir:::svir_build_spec(y ~ x1 + x2 + (x1 | g) + (1 | h), d, family = poisson())$spec
  inp <- obs_inputs(spec)
  r <- obs_pass(spec, inp, FALSE)
  # eta by hand: the terms' columns of Z times their groups' effects
  eta <- drop(spec$X %*% inp$beta)
  off <- 0
  for (t in spec$terms) {
    q <- ncol(t$Z)
    bt <- matrix(inp$b[off + seq_len(t$ngroups * q)], ncol = q, byrow = TRUE)
    eta <- eta + rowSums(t$Z * bt[t$group + 1L, , drop = FALSE])
    off <- off + t$ngroups * q
  }
  y <- spec$y
  expect_equal(r$ll, sum(y * eta - exp(eta)), tolerance = 1e-12)
  de <- y - exp(eta)
  expect_equal(r$gbeta, unname(drop(crossprod(spec$X, de))), tolerance = 1e-12)
  g1 <- spec$terms[[1]]
  G1 <- rowsum(g1$Z * de, g1$group, reorder = TRUE)
  expect_equal(r$G[seq_len(length(G1))], c(t(G1)), tolerance = 1e-12)
  expect_identical(r$gaux, 0)
})

test_that("the CUDA entry points fail with a clear error where CUDA cannot run", {
  skip_if(cuda_ok(), "a CUDA device is present")
  d <- sim_glmm("gaussian", n_groups = 4, n_per = 5, seed = 1)
  spec <- svir:::svir_build_spec(y ~ x1 + (1 | g), d)$spec
  inp <- obs_inputs(spec)
  msg <- if (cuda_built()) "CUDA" else "built without CUDA"
  expect_error(obs_pass(spec, inp, TRUE), msg)
  expect_error(.Call(C_svir_cuda_normals_r, 1, 2, 3, 0, 10), msg)
  # and R is still fine afterwards
  expect_length(obs_pass(spec, inp, FALSE)$G, 4)
})

test_that("CUDA normals are the CPU's, bit for bit", {
  skip_if_not(cuda_ok(), "no CUDA device")
  for (first in c(0, 1, 7)) {
    expect_identical(.Call(C_svir_cuda_normals_r, 4242, 2, 9, first, 1e5 + 3),
                     .Call(C_svir_normals_r, 4242, 2, 9, first + 1e5 + 3)[first + seq_len(1e5 + 3)])
  }
})

for (cs in family_cases) {
  lab <- paste(cs$family$family, cs$family$link)
  test_that(paste("the CUDA observation pass agrees with the CPU's:", lab), {
    skip_if_not(cuda_ok(), "no CUDA device")
    d <- sim_glmm(cs$sim, n_groups = 40, n_per = 25, crossed = 7, seed = 4)
    d$o <- 0.1 * d$x2
    forms <- list(y ~ x1 + x2 + (x1 | g) + (1 | h),
                  y ~ x1 + (1 | g) + (1 | h) + offset(o),
                  y ~ 0 + x1 + x2 + (x1 + x2 || g))
    for (f in forms) {
      spec <- svir:::svir_build_spec(f, d, family = cs$family)$spec
      inp <- obs_inputs(spec, seed = 3)
      a <- obs_pass(spec, inp, FALSE)
      b <- obs_pass(spec, inp, TRUE)
      # the same arithmetic per observation (no fused multiply-adds on either
      # side); libm's and CUDA's exp/log differ by an ulp or two, and the sums
      # run in another order
      expect_equal(b$ll, a$ll, tolerance = 1e-12)
      expect_equal(b$gbeta, a$gbeta, tolerance = 1e-11)
      expect_equal(b$gaux, a$gaux, tolerance = 1e-11)
      expect_equal(b$G, a$G, tolerance = 1e-11)
      expect_gte(b$ms, 0)
    }
  })
}

test_that("wide fixed-effect designs take the sliced gradient on the device", {
  skip_if_not(cuda_ok(), "no CUDA device")
  set.seed(8)
  n <- 3000
  X <- matrix(rnorm(n * 40), n)
  d <- data.frame(y = rpois(n, 2), g = factor(sample(50, n, TRUE)), X)
  f <- stats::reformulate(c(colnames(X), "(1 | g)"), "y")
  spec <- svir:::svir_build_spec(f, d, family = poisson())$spec
  inp <- obs_inputs(spec, seed = 2)
  inp$beta <- inp$beta / 10
  a <- obs_pass(spec, inp, FALSE)
  b <- obs_pass(spec, inp, TRUE)
  expect_equal(b$gbeta, a$gbeta, tolerance = 1e-11)
  expect_equal(b$ll, a$ll, tolerance = 1e-12)
})

local_inputs <- function(spec, seed = 1) {
  set.seed(seed)
  q <- vapply(spec$terms, function(t) ncol(t$Z), numeric(1))
  J <- vapply(spec$terms, function(t) t$ngroups, numeric(1))
  nz <- sum(J * q)
  list(lpar = rnorm(sum(J * (q + q * (q + 1) / 2)), sd = 0.4),
       # each term's q x q lower triangle, row-major
       A = unlist(lapply(q, function(k) {
         a <- matrix(0, k, k)
         a[lower.tri(a, diag = TRUE)] <- rnorm(k * (k + 1) / 2, sd = 0.5)
         c(t(a))
       })),
       G = rnorm(nz), shift = rnorm(sum(q), sd = 0.2))
}

local_step <- function(spec, inp, stl, shift, cuda, seed = 11, step = 3) {
  .Call(C_svir_local_step_r, spec, inp$lpar, inp$A, inp$G, if (shift) inp$shift, seed, step,
        stl, cuda)
}

test_that("the CPU per-group step is the closed form for random intercepts", {
  d <- sim_glmm("poisson", n_groups = 9, n_per = 4, seed = 5)
  spec <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  inp <- local_inputs(spec)
  r <- local_step(spec, inp, stl = FALSE, shift = FALSE, cuda = FALSE)
  m <- inp$lpar[c(TRUE, FALSE)]
  logC <- inp$lpar[c(FALSE, TRUE)]
  C <- exp(logC)
  noise <- .Call(C_svir_normals_r, 11, 2, 3, 9) # stream 2: the local noise
  expect_equal(r$z, m + C * noise, tolerance = 1e-15)
  expect_equal(r$b, inp$A * r$z, tolerance = 1e-15)
  expect_equal(r$kl, sum(0.5 * (m^2 + C^2 - 1) - logC), tolerance = 1e-14)
  expect_equal(r$logq, sum(-0.5 * noise^2 - logC - 0.5 * log(2 * pi)), tolerance = 1e-14)
  dz <- inp$A * inp$G
  expect_equal(r$lgrad[c(TRUE, FALSE)], dz - m, tolerance = 1e-14)
  expect_equal(r$lgrad[c(FALSE, TRUE)], dz * noise * C - (C^2 - 1), tolerance = 1e-14)
  # what the global block needs: dA = sum G z, sum m, sum z
  expect_equal(r$sums, c(sum(inp$G * r$z), sum(m), sum(r$z)), tolerance = 1e-14)
})

test_that("the CUDA per-group step needs a device and says so", {
  skip_if(cuda_ok(), "a CUDA device is present")
  d <- sim_glmm("poisson", n_groups = 5, n_per = 4, seed = 5)
  spec <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  inp <- local_inputs(spec)
  expect_error(local_step(spec, inp, stl = TRUE, shift = FALSE, cuda = TRUE),
               if (cuda_built()) "CUDA" else "built without CUDA")
})

test_that("the CUDA per-group step agrees with the CPU's", {
  skip_if_not(cuda_ok(), "no CUDA device")
  d <- sim_glmm("gaussian", n_groups = 300, n_per = 4, crossed = 20, seed = 6)
  forms <- list(y ~ x1 + (1 | g) + (1 | h), y ~ x1 + (x1 | g) + (1 | h),
                y ~ x1 + (x1 + x2 | g))
  for (f in forms) {
    spec <- svir:::svir_build_spec(f, d)$spec
    inp <- local_inputs(spec, seed = 2)
    for (stl in c(TRUE, FALSE)) for (shift in c(TRUE, FALSE)) {
      a <- local_step(spec, inp, stl, shift, FALSE)
      b <- local_step(spec, inp, stl, shift, TRUE)
      # the same operations per group; exp may differ by an ulp
      expect_equal(b$z, a$z, tolerance = 1e-14)
      expect_equal(b$b, a$b, tolerance = 1e-14)
      expect_equal(b$lgrad, a$lgrad, tolerance = 1e-12)
      expect_equal(b$kl, a$kl, tolerance = 1e-12)
      expect_equal(b$logq, a$logq, tolerance = 1e-12)
      expect_equal(b$sums, a$sums, tolerance = 1e-12)
    }
  }
})

test_that("the engine's Adam update is Adam's formula", {
  set.seed(12)
  n <- 11 # odd: the two-at-a-time path and its scalar tail
  par <- rnorm(n); mom <- rnorm(n, sd = 0.1); vel <- rexp(n) / 100; g <- rnorm(n)
  r <- .Call(C_svir_adam_r, par, mom, vel, g, 0.05, 7, FALSE)
  m1 <- 0.9 * mom + 0.1 * g
  v1 <- 0.999 * vel + 0.001 * g^2
  expect_equal(r$mom, m1, tolerance = 1e-15)
  expect_equal(r$vel, v1, tolerance = 1e-15)
  expect_equal(r$par, par + 0.05 * (m1 / (1 - 0.9^7)) / (sqrt(v1 / (1 - 0.999^7)) + 1e-8),
               tolerance = 1e-14)
  skip_if_not(cuda_ok(), "no CUDA device")
  # the same operations per element on the device: the same numbers
  expect_identical(.Call(C_svir_adam_r, par, mom, vel, g, 0.05, 7, TRUE), r)
})

test_that("the CUDA ELBO and gradient need a device and say so", {
  skip_if(cuda_ok(), "a CUDA device is present")
  d <- sim_glmm("poisson", n_groups = 5, n_per = 4, seed = 5)
  spec <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  ctrl <- list(guide = "meanfield", seed = 11, threads = 1L, num_particles = 1L, stl = 1L)
  v <- rand_vpar(spec, "meanfield")
  expect_error(.Call(C_svir_cuda_elbo_grad_r, spec, ctrl, v, 3),
               if (cuda_built()) "CUDA" else "built without CUDA")
})

for (cs in family_cases) {
  lab <- paste(cs$family$family, cs$family$link)
  test_that(paste("a whole ELBO step on the device agrees with the CPU's:", lab), {
    skip_if_not(cuda_ok(), "no CUDA device")
    d <- sim_glmm(cs$sim, n_groups = 30, n_per = 12, crossed = 5, seed = 7)
    forms <- list(y ~ x1 + x2 + (x1 | g) + (1 | h),   # correlated: LKJ; coupled intercept and slope
                  y ~ x1 + (1 | g) + (1 | h),         # random intercepts (the CPU's flat loops)
                  y ~ 0 + x1 + (x1 + x2 || g))        # no coupling
    for (f in forms) {
      spec <- svir:::svir_build_spec(f, d, family = cs$family)$spec
      for (guide in c("meanfield", "fullrank")) for (stl in 0:1) for (S in 1:2)
      for (bs in list(NULL, 70)) {
        # bs = 70: the minibatch of step 5, selected on the device
        ctrl <- list(guide = guide, seed = 11, threads = 1L, num_particles = S, stl = stl,
                     batch_size = bs)
        v <- rand_vpar(spec, guide)
        a <- .Call(C_svir_elbo_grad_r, spec, ctrl, v, 5)
        b <- .Call(C_svir_cuda_elbo_grad_r, spec, ctrl, v, 5)
        # the same draws and the same operations; sums in another order
        expect_equal(b$elbo, a$elbo, tolerance = 1e-11)
        expect_equal(b$grad, a$grad, tolerance = 1e-9)
      }
    }
  })
}

test_that("svi_fit(backend = 'cuda') needs a device and says so", {
  skip_if(cuda_ok(), "a CUDA device is present")
  d <- sim_glmm("poisson", n_groups = 5, n_per = 4, seed = 5)
  err <- tryCatch(svi_fit(y ~ x1 + (1 | g), d, family = poisson(), backend = "cuda", seed = 1),
                  error = identity)
  expect_s3_class(err, "svir_error")
  expect_match(conditionMessage(err), "CUDA device", fixed = TRUE)
  expect_match(conditionMessage(err), "backend = \"cpu\"", fixed = TRUE)
  # the engine itself refuses too, where the front door is bypassed
  spec <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  ctrl <- list(guide = "meanfield", seed = 1, threads = 1L, num_particles = 1L, stl = 1L,
               max_steps = 5, backend = "cuda")
  expect_error(.Call(C_svir_fit_r, spec, ctrl), "CUDA")
})

# a fit on the device against the same fit on the CPU: the same steps and
# stop, the trace, draws and random effects up to the order of the sums
expect_same_fit <- function(dev, cpu) {
  expect_identical(dev$backend, "cuda")
  expect_identical(dev$steps, cpu$steps)
  expect_identical(dev$stop_reason, cpu$stop_reason)
  expect_equal(dev$elbo, cpu$elbo, tolerance = 1e-6)
  expect_equal(as.matrix(dev), as.matrix(cpu), tolerance = 1e-6)
  expect_equal(ranef(dev), ranef(cpu), tolerance = 1e-6)
}

# Whole fits with a fixed number of steps: the same draws, minibatches and
# loop decisions on both backends, so the same parameters up to the order of
# floating-point sums (tolerance 1e-6 relative after 300 steps). The device
# fits every term non-centred, so the CPU's fit is told to (centre =
# "none"): with the centring rule's default the two fitted different
# parameterisations, which these tests, never run before the emulation
# (issue 19), did not notice.
for (cs in family_cases) {
  lab <- paste(cs$family$family, cs$family$link)
  test_that(paste("a fit on the device agrees with the CPU's:", lab), {
    skip_if_not(cuda_ok(), "no CUDA device")
    d <- sim_glmm(cs$sim, n_groups = 30, n_per = 12, crossed = 5, seed = 8)
    for (guide in c("meanfield", "fullrank")) for (bs in list(NULL, 90)) {
      ctl <- svi_control(max_steps = 300, eval_every = 50, batch_size = bs, ndraws = 200,
                         progress = FALSE, centre = "none")
      fits <- lapply(c("cpu", "cuda"), function(be)
        svi_fit(y ~ x1 + (x1 | g) + (1 | h), d, family = cs$family, guide = guide,
                control = ctl, backend = be, seed = 3))
      expect_same_fit(fits[[2]], fits[[1]])
      # the posterior draws and their PSIS diagnostic, made on the device
      expect_equal(fits[[2]]$khat, fits[[1]]$khat, tolerance = 1e-6)
    }
  })
}

# Bayesian networks on the device (src/cuda/bnn_dev.cu): each step's batch
# there (the products by cuBLAS, the CPU's noise), the rest on the host, so
# the same fit up to the order of the sums.
bnn_data <- function(n = 300, seed = 4) {
  set.seed(seed)
  d <- data.frame(x1 = rnorm(n), x2 = rnorm(n), x3 = rnorm(n))
  d$y <- sin(d$x1) + 0.5 * d$x2 + rnorm(n, sd = 0.3)
  d$yb <- as.integer(d$y > 0)
  d
}

test_that("a network on backend = 'cuda' needs a device and says so", {
  skip_if(cuda_ok(), "a CUDA device is present")
  err <- tryCatch(svi_fit(y ~ x1 + x2, bnn_data(60), model = bnn(hidden = 4), backend = "cuda",
                          seed = 1, control = svi_control(max_steps = 5, progress = FALSE)),
                  error = identity)
  expect_s3_class(err, "svir_error")
  expect_match(conditionMessage(err), "CUDA device", fixed = TRUE)
})

test_that("a network fit on the device agrees with the CPU's", {
  skip_if_not(cuda_ok(), "no CUDA device")
  d <- bnn_data()
  cases <- list(list(f = y ~ x1 + x2 + x3, fam = gaussian(), m = bnn(hidden = 24)),
                list(f = yb ~ x1 + x2 + x3, fam = binomial(),
                     m = bnn(hidden = c(12, 6), activation = "tanh")))
  for (cs in cases) for (bs in list(NULL, 64L)) {
    ctl <- svi_control(max_steps = 200, eval_every = 50, batch_size = bs, num_particles = 2L,
                       progress = FALSE)
    # (200 steps do not converge: the warning saying so is not the test's)
    fits <- lapply(c("cpu", "cuda"), function(be) suppressWarnings(
      svi_fit(cs$f, d, family = cs$fam, model = cs$m, control = ctl, backend = be, seed = 3)))
    expect_identical(fits[[2]]$backend, "cuda")
    expect_identical(fits[[2]]$steps, fits[[1]]$steps)
    expect_identical(fits[[2]]$stop_reason, fits[[1]]$stop_reason)
    expect_equal(fits[[2]]$elbo, fits[[1]]$elbo, tolerance = 1e-6)
    expect_equal(fits[[2]]$mean, fits[[1]]$mean, tolerance = 1e-6)
    expect_equal(fits[[2]]$sd, fits[[1]]$sd, tolerance = 1e-6)
  }
})

# QEM on the device (src/cuda/glmm_qem.cu): the groups' draws, tables
# and M-step there, the globals on the host.
test_that("QEM on the device needs a device and says so", {
  skip_if(cuda_ok(), "a CUDA device is present")
  d <- sim_glmm("poisson", n_groups = 5, n_per = 4, seed = 5)
  err <- tryCatch(svi_fit(y ~ x1 + (1 | g), d, family = poisson(), method = "qem",
                          backend = "cuda", seed = 1), error = identity)
  expect_s3_class(err, "svir_error")
  expect_match(conditionMessage(err), "CUDA device", fixed = TRUE)
  spec <- svir:::svir_build_spec(y ~ x1 + (1 | g), d, family = poisson())$spec
  ctrl <- list(guide = "meanfield", seed = 1, threads = 1L, max_steps = 5, K = 4L,
               method = "qem", couple = 0L, backend = "cuda")
  expect_error(.Call(C_svir_fit_r, spec, ctrl), "CUDA")
})

# Whole QEM fits: the same draws and decisions on both backends; the device
# evaluates every observation where the CPU uses sufficient sums (Gaussian,
# Poisson intercepts), so agreement is up to rounding (1e-6 relative).
for (cs in family_cases) {
  lab <- paste(cs$family$family, cs$family$link)
  test_that(paste("QEM on the device agrees with the CPU's:", lab), {
    skip_if_not(cuda_ok(), "no CUDA device")
    d <- sim_glmm(cs$sim, n_groups = 40, n_per = 10, seed = 8)
    forms <- list(y ~ x1 + (1 | g), y ~ x1 + (x1 | g))
    for (f in forms) for (guide in c("meanfield", "fullrank")) {
      ctl <- svi_control(K = 8L, max_steps = 120, eval_every = 40, ndraws = 200,
                         progress = FALSE)
      fits <- lapply(c("cpu", "cuda"), function(be)
        svi_fit(f, d, family = cs$family, guide = guide, method = "qem", control = ctl,
                backend = be, seed = 3))
      expect_same_fit(fits[[2]], fits[[1]])
    }
  })
}

# ---- The Poisson-lognormal model on the device (src/cuda/pln_*.cu)

pln_cuda_sim <- function(n = 300, p = 30, seed = 1) {
  set.seed(seed)
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Sigma <- 0.4 * 0.6^abs(outer(1:p, 1:p, "-"))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sigma)
  depth <- exp(rnorm(n, 0, 0.3))
  d <- data.frame(x = x, depth = depth)
  d$Y <- matrix(as.double(rpois(n * p, depth * exp(Z))), n,
                dimnames = list(NULL, paste0("sp", seq_len(p))))
  d
}

# the objective's data (as R/pln.R builds them) and a point near a fit
pln_cuda_dat <- function(d, cov, q = 3L, sparse = FALSE, orow = FALSE, nd = NULL, seed = 2) {
  set.seed(seed)
  Y <- unclass(d$Y)
  n <- nrow(Y)
  p <- ncol(Y)
  X <- cbind(1, d$x)
  O <- matrix(log(d$depth), n, p)
  dat <- list(Y = Y, O = O, X = X, P = solve(crossprod(X), t(X)), lgy = sum(lgamma(Y + 1)),
              cov = cov, q = q, n = n, p = p, d = 2L, nd = if (is.null(nd)) n else nd)
  if (orow) {
    dat$O <- NULL
    dat$Orow <- log(d$depth)
  }
  if (sparse) {
    Ysp <- Matrix::Matrix(Y, sparse = TRUE)
    dat$Y <- NULL
    dat[c("Yp", "Yi", "Yx")] <- list(Ysp@p, Ysp@i, as.double(Ysp@x))
  }
  M <- log1p(Y) - O + rnorm(n * p, 0, 0.1)
  par <- c(M, rep(log(0.3), n * p) + rnorm(n * p, 0, 0.1))
  if (cov == 3L) par <- c(par, rnorm(p * q, 0, 0.3), log(runif(p, 0.2, 0.5)))
  list(dat = dat, par = par)
}

test_that("pln() on the device is refused where it cannot run, and 'auto' stays on the CPU", {
  d <- pln_cuda_sim(40, 5, seed = 3)
  expect_error(svi_fit(Y ~ x, d, family = pln(rank = 2, residual = TRUE), method = "qem", backend = "cuda"),
               "CPU only", class = "svir_error")
  expect_error(svi_fit(Y ~ x, d, family = pln(rank = 2), backend = "cuda"), "CPU only",
               class = "svir_error")
  expect_error(svi_fit(Y ~ x, d, family = pln(), backend = "cuda",
                       control = svi_control(batch_size = 10)),
               "CPU only", class = "svir_error")
  fit <- svi_fit(Y ~ x, d, family = pln(), backend = "auto")
  expect_identical(fit$backend, "cpu")
  skip_if(cuda_ok(), "a CUDA device is present")
  expect_error(svi_fit(Y ~ x, d, family = pln(), backend = "cuda"), "CUDA", class = "svir_error")
  u <- pln_cuda_dat(d, 0L)
  msg <- if (cuda_built()) "CUDA" else "built without CUDA"
  expect_error(.Call(C_svir_pln_eval_cuda_r, u$dat, u$par), msg)
  expect_error(.Call(C_svir_pln_fit_cuda_r, u$dat, u$par, 10L, 1e-6), msg)
})

test_that("the PLN objective and gradient on the device are the CPU's (every mode)", {
  skip_if_not(cuda_ok(), "no usable CUDA device")
  d <- pln_cuda_sim()
  cases <- list(
    list(cov = 0L), list(cov = 1L), list(cov = 2L), list(cov = 3L),
    list(cov = 0L, orow = TRUE), list(cov = 3L, orow = TRUE, nd = 298),
    list(cov = 1L, nd = 298), list(cov = 0L, sparse = TRUE), list(cov = 1L, sparse = TRUE),
    list(cov = 3L, sparse = TRUE, orow = TRUE))
  for (cs in cases) {
    u <- do.call(pln_cuda_dat, c(list(d), cs))
    a <- .Call(C_svir_pln_eval_r, u$dat, u$par)
    b <- .Call(C_svir_pln_eval_cuda_r, u$dat, u$par)
    info <- paste(names(cs), unlist(cs), collapse = " ")
    expect_equal(b$J, a$J, tolerance = 1e-10, info = info)
    expect_equal(b$grad, a$grad, tolerance = 1e-10, info = info)
    expect_equal(b$B, a$B, tolerance = 1e-10, info = info)
    expect_equal(b$Sigma, a$Sigma, tolerance = 1e-10, info = info)
  }
  # the VE step (B and Omega held fixed)
  u <- pln_cuda_dat(d, 0L)
  fit <- .Call(C_svir_pln_eval_r, u$dat, u$par)
  u$dat$Bfix <- fit$B
  u$dat$Omfix <- solve(fit$Sigma)
  u$dat$logdet_om <- -as.numeric(determinant(fit$Sigma)$modulus)
  a <- .Call(C_svir_pln_eval_r, u$dat, u$par)
  b <- .Call(C_svir_pln_eval_cuda_r, u$dat, u$par)
  expect_equal(b$J, a$J, tolerance = 1e-10)
  expect_equal(b$grad, a$grad, tolerance = 1e-10)
  # sparse = dense on the device
  for (cov in c(0L, 3L)) {
    a <- .Call(C_svir_pln_eval_cuda_r, pln_cuda_dat(d, cov)$dat, pln_cuda_dat(d, cov)$par)
    u <- pln_cuda_dat(d, cov, sparse = TRUE)
    b <- .Call(C_svir_pln_eval_cuda_r, u$dat, u$par)
    expect_equal(b$J, a$J, tolerance = 1e-12)
    expect_equal(b$grad, a$grad, tolerance = 1e-12)
  }
})

test_that("pln() fits on the device are the CPU's (full, diagonal, rank 3 + diagonal; dense and sparse)", {
  skip_if_not(cuda_ok(), "no usable CUDA device")
  d <- pln_cuda_sim()
  Ysp <- Matrix::Matrix(unclass(d$Y), sparse = TRUE)
  # path by path at the default tolerance: the device's L-BFGS is the CPU's
  # (the S start, the per-column preconditioner), with its sums in another
  # order, so the same iterations (within one) and the same fit to 1e-6
  for (fam in list(pln(), pln(covariance = "diagonal"), pln(rank = 3, residual = TRUE))) {
    a <- svi_fit(Y ~ x + offset(log(depth)), d, family = fam, backend = "cpu")
    b <- svi_fit(Y ~ x + offset(log(depth)), d, family = fam, backend = "cuda")
    info <- paste(fam$covariance, fam$rank)
    expect_identical(b$backend, "cuda")
    expect_identical(b$stop_reason, "converged")
    expect_true(abs(b$steps - a$steps) <= 1, info = info)
    expect_equal(b$elbo, a$elbo, tolerance = 1e-6, info = info)
    expect_equal(coef(b), coef(a), tolerance = 1e-6, info = info)
    expect_equal(sigma(b), sigma(a), tolerance = 1e-6, info = info)
    s <- svi_fit(Ysp ~ x + offset(log(depth)), d, family = fam, backend = "cuda")
    expect_equal(s$elbo, b$elbo, tolerance = 1e-6, info = info)
    expect_equal(coef(s), coef(b), tolerance = 1e-6, info = info)
    expect_equal(sigma(s), sigma(b), tolerance = 1e-6, info = info)
  }
  # and both run to a tight tolerance reach the same optimum
  ctl <- svi_control(max_steps = 5000)
  ctl$pln_tol <- 1e-11
  for (fam in list(pln(), pln(covariance = "diagonal"), pln(rank = 3, residual = TRUE))) {
    a <- svi_fit(Y ~ x + offset(log(depth)), d, family = fam, backend = "cpu", control = ctl)
    b <- svi_fit(Y ~ x + offset(log(depth)), d, family = fam, backend = "cuda", control = ctl)
    info <- paste(fam$covariance, fam$rank)
    expect_identical(b$stop_reason, "converged")
    expect_equal(b$elbo, a$elbo, tolerance = 1e-7, info = info)
    expect_equal(coef(b), coef(a), tolerance = 1e-4, info = info)
    expect_equal(sigma(b), sigma(a), tolerance = 1e-4, info = info)
  }
})
