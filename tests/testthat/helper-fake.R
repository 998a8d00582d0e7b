# A fake engine for testing the result methods without the C engine.
#
# fake_fit() builds the model with svir_build_spec() (the real front end),
# fits the same model with lme4, maps lme4's estimates to the engine's
# internal units (dev/ARCHITECTURE.md, section 6) and returns what svir_postprocess()
# makes of an engine list (dev/ARCHITECTURE.md, section 6) holding them: a guide centred
# at lme4's estimates, per-group guides from lme4's conditional modes and
# variances, draws from the global guide, a smooth ELBO trace and
# well-behaved log importance ratios.

# Inverse of Stan's cholesky_corr transform: Cholesky factor -> unconstrained.
fake_chol_to_cpc <- function(L) {
  q <- nrow(L)
  y <- numeric(0)
  if (q < 2L) return(y)
  for (i in 2:q) {
    ss <- 0
    for (j in seq_len(i - 1L)) {
      z <- L[i, j] / sqrt(1 - ss)
      y <- c(y, atanh(z))
      ss <- ss + L[i, j]^2
    }
  }
  y
}

fake_lme4 <- function(formula, data, family) {
  fam <- if (is.character(family)) family else family$family
  quiet <- function(x) suppressMessages(suppressWarnings(x))
  if (fam == "gaussian") return(quiet(lme4::lmer(formula, data, REML = FALSE)))
  if (fam == "negbin") return(quiet(lme4::glmer.nb(formula, data)))
  quiet(lme4::glmer(formula, data, family = family))
}

fake_engine <- function(info, mod, guide = c("meanfield", "fullrank"), ndraws = 1000L,
                        log_ratio_sd = 0.3, steps = 1500L, seed = 1L) {
  guide <- match.arg(guide)
  set.seed(seed)
  sc <- info$scaling
  fam <- info$family$family
  gauss <- fam == "gaussian"
  ys <- if (gauss) sc$y_scale else 1
  X <- info$X
  p <- ncol(X)
  xn <- colnames(X)
  bmap <- svir_beta_map(svir_normalise_scaling(sc, X, if (gauss) "gaussian" else "other"),
                        xn, attr(X, "assign"))
  beta_raw <- lme4::fixef(mod)[xn]
  beta_s <- solve(bmap$T, beta_raw - bmap$shift)
  Tinv <- solve(bmap$T)
  Vs <- Tinv %*% as.matrix(stats::vcov(mod))[xn, xn] %*% t(Tinv)

  vc <- lme4::VarCorr(mod)
  re <- info$re
  bvec <- lme4::getME(mod, "b")
  Gp <- lme4::getME(mod, "Gp")
  rr <- lme4::ranef(mod, condVar = TRUE)
  sigma_raw <- stats::sigma(mod)
  log_sd <- list(); cpc <- list(); m <- list(); C <- list()
  for (t in seq_along(re)) {
    r <- re[[t]]
    q <- length(r$cnms)
    v <- vc[[t]]
    stopifnot(identical(colnames(v), r$cnms))
    sd_raw <- attr(v, "stddev")
    R <- attr(v, "correlation")
    # lme4 (glmer) sds are on the link scale; gaussian lme4 sds in y units
    log_sd[[t]] <- log(sd_raw / ys)
    L <- if (r$correlated) t(chol(R + diag(1e-10, q))) else diag(q)
    if (r$correlated) cpc[[t]] <- fake_chol_to_cpc(L)
    A <- diag(sd_raw / ys, q) %*% L
    b <- matrix(bvec[(Gp[t] + 1):Gp[t + 1]], ncol = q, byrow = TRUE) / ys
    if (gauss) b <- b  # getME(b) is in y units for lmer, like the sds
    m[[t]] <- t(solve(A, t(b)))
    # per-group covariance of z from lme4's conditional variances
    pv <- attr(rr[[r$grpvar]], "postVar")
    if (is.list(pv)) {
      same <- which(vapply(re, `[[`, "", "grpvar") == r$grpvar)
      pv <- pv[[match(t, same)]]
    }
    Ainv <- solve(A)
    J <- length(r$levels)
    Cp <- matrix(0, J, q * (q + 1) / 2)
    for (j in seq_len(J)) {
      Vz <- Ainv %*% (matrix(pv[, , j], q, q) / ys^2) %*% t(Ainv)
      Lz <- t(chol(Vz + diag(1e-12, q)))
      k <- 0
      for (i in seq_len(q)) for (jj in seq_len(i)) {
        k <- k + 1
        Cp[j, k] <- if (i == jj) log(Lz[i, i]) else Lz[i, jj]
      }
    }
    C[[t]] <- Cp
  }
  mu <- c(beta_s, unlist(log_sd), unlist(cpc),
          if (gauss) log(sigma_raw / ys),
          if (fam == "negbin") log(lme4::getME(mod, "glmer.nb.theta")))
  D <- length(mu)
  stopifnot(D == nrow(info$layout))
  sds <- c(sqrt(diag(Vs)), rep(0.15, length(unlist(log_sd))), rep(0.25, length(unlist(cpc))),
           if (gauss) 0.05, if (fam == "negbin") 0.2)
  eng <- list(mu = unname(mu))
  if (guide == "meanfield") {
    eng$omega <- log(sds)
    Lg <- diag(sds, D)
  } else {
    S <- diag(sds^2, D)
    S[seq_len(p), seq_len(p)] <- Vs
    if (D > p + 1L) S[p + 1, p + 2] <- S[p + 2, p + 1] <- 0.3 * sds[p + 1] * sds[p + 2]
    Lg <- t(chol(S))
    eng$L <- Lg
  }
  eng$m <- m
  eng$C <- C
  k <- seq_len(steps)
  elbo_end <- -800
  eng$elbo <- elbo_end - 5000 * exp(-k / 100) + stats::rnorm(steps, 0, 3)
  eng$elbo[c(17L, 400L)] <- NaN
  eng$steps <- steps
  eng$stop_reason <- "converged"
  eng$lr_final <- 0.01
  eng$time <- 0.42
  eng$draws <- matrix(stats::rnorm(ndraws * D), ndraws, D) %*% t(Lg) +
    matrix(mu, ndraws, D, byrow = TRUE)
  eng$log_ratio <- stats::rnorm(ndraws, -810, log_ratio_sd)
  eng$n_rejected <- 2L
  eng$lr_steps <- c(700L, 1100L)
  eng$elbo_final <- mean(utils::tail(eng$elbo[is.finite(eng$elbo)], 50))
  eng
}

# A complete svi_fit made from the fake engine. `data_name` is what the call
# records as data.
fake_fit <- function(formula = Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy,
                     family = gaussian(), guide = "meanfield", ndraws = 1000L,
                     data_name = quote(lme4::sleepstudy), ...) {
  built <- svir_build_spec(formula, data, family = family)
  info <- built$info
  mod <- fake_lme4(formula, data, if (info$family$family == "negbin") "negbin" else family)
  eng <- fake_engine(info, mod, guide = guide, ndraws = ndraws, ...)
  call <- call("svi_fit", formula = formula, data = data_name)
  fit <- svir_postprocess(eng, info, call = call,
                          control = list(eval_every = 50L, ndraws = ndraws),
                          method = "svi", guide = guide,
                          backend = list(backend = "cpu", reason = "fake engine for tests"),
                          seed = 42)
  attr(fit, "lme4") <- mod
  fit
}
