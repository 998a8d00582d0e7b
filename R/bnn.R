# Bayesian neural networks (issue 18): bnn(), the job svi_fit() builds for
# it, the fit object and its methods. The engine is src/models/bnn/.

#' A Bayesian neural network for svi_fit()
#'
#' A multilayer perceptron with priors on its weights, fitted by
#' stochastic variational inference: `svi_fit(y ~ ., data, family =
#' gaussian(), model = bnn(hidden = 50))`. The inputs are the formula's
#' model matrix (factors expanded, no intercept column), each column
#' standardised by its mean and sd in the training data (new data in
#' [predict()] the same way); a gaussian response is standardised too, and
#' results come back in its units.
#'
#' **The model.** Hidden layers of widths `hidden` with the activation
#' `activation`, then one output, the linear predictor of the family
#' (gaussian identity, binomial logit with a 0/1 response, poisson log).
#' Each weight of a layer with fan-in `m` has the prior N(0, `prior_scale`^2
#' / m), each bias N(0, `bias_scale`^2), and the gaussian noise sd (on the
#' standardised scale) a half-normal N+(0, 1).
#'
#' **The fit.** A mean-field Gaussian guide over every weight and bias (and
#' log sigma); each step draws every layer's pre-activations from their
#' Gaussian under the guide given the layer's input (the local
#' reparameterisation of Kingma, Salimans and Welling 2015, so that
#' minibatch gradients have low variance), with the weights' KL in closed
#' form and the gradients derived by hand (checked against finite
#' differences in the tests). Particles are stacked as rows, and each
#' layer's products go through R's BLAS; with `backend = "cuda"` in
#' [svi_fit()] the batch's forward and backward passes run on the GPU
#' (cuBLAS, with the CPU's very noise, so both give the same fit up to the
#' order of floating-point sums) and the rest of each step on the CPU.
#' Minibatches of 256 rows are used
#' by default above 1000 rows (`svi_control(batch_size = )`). `method =
#' "qem"` is not offered for networks.
#'
#' @param hidden Widths of the hidden layers, whole numbers of at least 1
#'   (at most 8 layers); `integer(0)` for none (a GLM).
#' @param activation `"relu"` or `"tanh"`.
#' @param prior The weights' prior: `"normal"` (N(0, `prior_scale`^2 /
#'   fan-in)); `"hierarchical"` (N(0, `prior_scale`^2 / (fan-in x
#'   lambda_l)) with a precision lambda_l per layer, lambda_l ~ Gamma(6, 6),
#'   as in probabilistic backpropagation; the guide has a log-normal over each
#'   lambda_l); or `"laplace"` (Laplace with the normal's variance: heavier
#'   tails and more mass at 0). Each one's KL is in closed form.
#' @param prior_scale The weights' prior sd times the square root of the
#'   layer's fan-in.
#' @param bias_scale The biases' prior sd.
#' @param kl_warmup Steps over which the weight of the KL term in the
#'   gradient rises linearly from 0 to 1 (0: none). The ELBO reported and
#'   the stopping rule use the full KL throughout, and the fit does not
#'   stop before the warm-up ends. On a 60-point regression with 5 tanh
#'   units the mean-field fit without it pruned the units (a nearly flat
#'   curve, predictive means up to 2.6 NUTS predictive sds off), and with
#'   2000 steps of it matched NUTS's predictive means within 0.34 sds; the
#'   pruned fit had the higher ELBO (bench/README.md, "Bayesian neural
#'   networks").
#' @param kl_weight The weights' KL term's weight in the objective the
#'   optimiser climbs, in (0, 1]: 1 (the default) is the ELBO; below 1 a tempered
#'   ("beta-VI") objective that lets the data pull the weights further from
#'   the prior, as with the small data sets where mean-field networks
#'   underfit. The ELBO reported, its parts and the stopping rule stay the
#'   full ELBO's. Choose it on held-out rows, not on the ELBO (which it
#'   lowers).
#' @return An object of class `svir_bnn` for [svi_fit()]'s `model`.
#' @seealso [predict.svi_bnn()]
#' @examples
#' set.seed(1)
#' d <- data.frame(x = runif(200, -3, 3))
#' d$y <- sin(d$x) + rnorm(200, sd = 0.1)
#' fit <- svi_fit(y ~ x, d, model = bnn(hidden = 20, activation = "tanh"), seed = 1,
#'                control = svi_control(max_steps = 3000, progress = FALSE))
#' head(predict(fit, data.frame(x = c(-2, 0, 2))))
#' @export
bnn <- function(hidden = 50, activation = c("relu", "tanh"), prior = c("normal", "hierarchical", "laplace"),
                prior_scale = 1, bias_scale = 1, kl_warmup = 0, kl_weight = 1) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  if (!is.numeric(hidden) || anyNA(hidden) || any(hidden != round(hidden)) || any(hidden < 1) ||
      length(hidden) > 8L) {
    abort(c("{.arg hidden} must be the hidden layers' widths: up to 8 whole numbers of at least 1.",
            x = "You supplied {.code {deparse1(hidden)}}."))
  }
  if (!is.character(activation) || length(activation) < 1L || anyNA(activation)) {
    abort("{.arg activation} must be {.or {.val {names(svir_codes$bnn_act)}}}.")
  }
  activation <- activation[1L]
  prior <- svir_match_arg(prior, names(svir_codes$bnn_prior), "prior")
  if (!activation %in% names(svir_codes$bnn_act)) {
    abort(c("{.arg activation} must be {.or {.val {names(svir_codes$bnn_act)}}}.",
            x = "Unknown activation {.val {activation}}."))
  }
  if (!is.numeric(kl_warmup) || length(kl_warmup) != 1L || is.na(kl_warmup) || kl_warmup < 0 ||
      kl_warmup != round(kl_warmup)) {
    abort("{.arg kl_warmup} must be a whole number of steps, at least 0.")
  }
  if (!is.numeric(kl_weight) || length(kl_weight) != 1L || !is.finite(kl_weight) || kl_weight <= 0 ||
      kl_weight > 1) {
    abort(c("{.arg kl_weight} must be one number in (0, 1].",
            x = "You supplied {.code {deparse1(kl_weight)}}."))
  }
  for (a in c("prior_scale", "bias_scale")) {
    v <- get(a)
    if (!is.numeric(v) || length(v) != 1L || !is.finite(v) || v <= 0) {
      abort("{.arg {a}} must be one positive number.")
    }
  }
  structure(list(hidden = as.integer(hidden), activation = activation, prior = prior, prior_scale = prior_scale,
                 bias_scale = bias_scale, kl_warmup = as.integer(kl_warmup), kl_weight = kl_weight),
            class = "svir_bnn")
}

#' @export
print.svir_bnn <- function(x, ...) {
  cat(sprintf("bnn(): hidden layers %s, %s; prior sd %g / sqrt(fan-in), biases %g\n",
              if (length(x$hidden)) paste(x$hidden, collapse = " x ") else "none",
              x$activation, x$prior_scale, x$bias_scale))
  if (!is.null(x$kl_weight) && x$kl_weight != 1) cat(sprintf("  KL weight %g (a tempered objective)\n", x$kl_weight))
  invisible(x)
}

# the network's inputs from a model frame's terms: the model matrix without
# its intercept column
svir_bnn_matrix <- function(tt, mf, xlev = NULL) {
  X <- stats::model.matrix(tt, mf, xlev = xlev)
  X[, colnames(X) != "(Intercept)", drop = FALSE]
}

svir_bnn_build <- function(formula, data, family, model, prior, guide, method, control, backend,
                           seed, na.action, call, guide_given = FALSE, ...) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = call, .envir = .envir)
  }
  if (method %in% c("qem", "laplace")) {
    abort(c("{.code method = \"{method}\"} is not offered for networks: its importance weighting or Laplace step over thousands of weights has no useful proposal.",
            i = "Use {.code method = \"svi\"} (the default)."))
  }
  if (isTRUE(guide_given) && !identical(guide, "meanfield")) {
    abort("{.fn bnn} takes the mean-field guide: a full-rank guide over every weight would not fit in memory.")
  }
  if (!is.null(prior)) cli::cli_warn("{.arg prior} is not used by {.fn bnn} fits: give {.arg prior_scale} and {.arg bias_scale} to {.fn bnn}.")
  fam <- family$family
  if (!inherits(family, "family") || !fam %in% c("gaussian", "binomial", "poisson") ||
      !identical(family$link, c(gaussian = "identity", binomial = "logit", poisson = "log")[[fam]])) {
    abort(c("{.fn bnn} takes {.code gaussian()}, {.code binomial()} or {.code poisson()} with their canonical links.",
            x = "You supplied {.code {family$family}({family$link})}."))
  }
  if (!is.data.frame(data)) abort("{.arg data} must be a data frame.")
  mf <- stats::model.frame(formula, data, na.action = na.action)
  tt <- attr(mf, "terms")
  y <- stats::model.response(mf)
  if (is.null(y)) abort("The formula has no response: write {.code y ~ x1 + x2} or {.code y ~ .}.")
  if (fam == "binomial") {
    if (is.factor(y)) y <- as.numeric(y != levels(y)[1L]) else if (is.logical(y)) y <- as.numeric(y)
    if (!is.numeric(y) || any(!y %in% c(0, 1))) {
      abort(c("A {.code binomial()} network takes a 0/1 (or two-level factor, or logical) response.",
              x = "The response has values other than 0 and 1."))
    }
  } else if (fam == "poisson") {
    if (!is.numeric(y) || any(y < 0 | y != round(y))) {
      abort("A {.code poisson()} network takes a response of whole numbers of at least 0.")
    }
  } else if (!is.numeric(y)) {
    abort("A {.code gaussian()} network takes a numeric response.")
  }
  y <- as.numeric(y)
  X <- svir_bnn_matrix(tt, mf)
  d <- ncol(X)
  if (d < 1L) abort("The formula gives the network no inputs: name at least one predictor.")
  # the held-out rows (svi_control(validation = )), drawn from the seed; R's
  # random numbers are put back after
  val <- if (is.null(control$validation)) 0 else control$validation
  hold <- integer(0)
  if (val > 0) {
    nv <- round(val * nrow(X))
    if (nv < 1L || nrow(X) - nv < 2L) {
      abort("{.code validation = {val}} of {nrow(X)} rows leaves no held-out rows or too few to fit.")
    }
    rng <- svir_sim_seed((seed + 7919) %% .Machine$integer.max)
    hold <- sort(sample.int(nrow(X), nv))
    if (!is.null(rng$old)) assign(".Random.seed", rng$old, envir = .GlobalEnv)
  }
  Xv <- X[hold, , drop = FALSE]
  yv <- y[hold]
  if (length(hold)) {
    X <- X[-hold, , drop = FALSE]
    y <- y[-hold]
  }
  n <- nrow(X)
  if (n < 2L) abort("The data have {n} row{?s} after {.arg na.action}: too few to fit.")
  xc <- colMeans(X)
  xs <- apply(X, 2L, stats::sd)
  xs[!is.finite(xs) | xs == 0] <- 1
  Xs <- sweep(sweep(X, 2L, xc), 2L, xs, "/")
  Xvs <- sweep(sweep(Xv, 2L, xc), 2L, xs, "/")
  ym <- 0
  ys <- 1
  if (fam == "gaussian") {
    ym <- mean(y)
    ys <- stats::sd(y)
    if (!is.finite(ys) || ys == 0) ys <- 1
  }
  hidden <- model$hidden
  dims <- c(d, hidden, 1L)
  L <- length(hidden)
  # the guide's starting means: the weights N(0, 1 / fan-in) (He-style),
  # the biases 0, log sigma log(0.5), from the seed; R's random numbers
  # are put back after
  rng <- svir_sim_seed(seed %% .Machine$integer.max)
  init <- unlist(lapply(seq_len(L + 1L), function(l) {
    c(stats::rnorm(dims[l] * dims[l + 1L], 0, 1 / sqrt(dims[l])), rep(0, dims[l + 1L]))
  }))
  if (!is.null(rng$old)) assign(".Random.seed", rng$old, envir = .GlobalEnv)
  if (model$prior == "hierarchical") init <- c(init, rep(0, L + 1L)) # log lambda_l at 0
  if (fam == "gaussian") init <- c(init, log(0.5))
  if (is.null(control$batch_size) && n > 1000L) control$batch_size <- 256L
  if (!is.null(control$batch_size) && control$batch_size >= n) control$batch_size <- NULL
  if (is.null(control$num_particles)) control$num_particles <- 1L
  be <- svir_choose_backend(backend, model = "bnn", method = "svi",
                            minibatch = !is.null(control$batch_size), call = call)
  spec <- list(model = "bnn", n = n, d = d, L = L, hidden = as.integer(hidden),
               act = svir_codes$bnn_act[[model$activation]], family = svir_codes$family[[fam]],
               prior = svir_codes$bnn_prior[[model$prior]],
               X = Xs, y = if (fam == "gaussian") (y - ym) / ys else y,
               w_scale = model$prior_scale, b_scale = model$bias_scale, init_mu = init,
               kl_warmup = model$kl_warmup, kl_weight = if (is.null(model$kl_weight)) 1 else model$kl_weight,
               nv = length(hold),
               # the tiles' passes: 0 by the layers' widths (one hidden
               # layer fused), 1 layer by layer by loops, 2 by BLAS, 3
               # fused; the loops' instruction set: 0 the machine's best, 1
               # the baseline, 2 AVX2 at most (developers' options, for the
               # tests of each)
               path = as.integer(getOption("svir.bnn_path", 0L)),
               isa = as.integer(getOption("svir.bnn_isa", 0L)))
  if (length(hold)) {
    spec$Xv <- Xvs
    spec$yv <- if (fam == "gaussian") (yv - ym) / ys else yv
  }
  ctrl <- svir_engine_ctrl(control, "meanfield", seed, be$backend, "svi")
  # no stop, rollback or best window before the warm-up ends
  ctrl$min_steps <- model$kl_warmup
  list(spec = spec, ctrl = ctrl, control = control, method = "svi", guide = "meanfield",
       backend = be, seed = seed, family = family, model = model, call = call, formula = formula,
       tt = tt, xlevels = stats::.getXlevels(tt, mf), xcenter = xc, xscale = xs, ymean = ym,
       yscale = ys, dims = dims, n = n, xnames = colnames(X), nval = length(hold))
}

svir_bnn_finish <- function(engine, job) {
  svir_warn_stop(engine, job$control)
  D <- length(engine$vpar) / 2
  structure(list(
    call = job$call, formula = job$formula, family = job$family, model = job$model,
    method = "svi", n = job$n, dims = job$dims, xnames = job$xnames, tt = job$tt,
    xlevels = job$xlevels, xcenter = job$xcenter, xscale = job$xscale, ymean = job$ymean,
    yscale = job$yscale, mean = engine$vpar[seq_len(D)], sd = exp(engine$vpar[D + seq_len(D)]),
    draws = engine$draws, elbo = engine$elbo, elbo_final = engine$elbo_final, steps = engine$steps,
    nval = job$nval, val_trace = engine$val_trace, val_best_step = engine$val_best_step,
    ell = engine$ell, kl = engine$kl, time_split = engine$time_split,
    stop_reason = engine$stop_reason, time = engine$time, backend = job$backend$backend,
    backend_reason = job$backend$reason, control = job$control, seed = job$seed, npar = D
  ), class = "svi_bnn")
}

# the network's output eta (n x ndraws) for standardised inputs Xs and the
# parameter draws (ndraws x D)
svir_bnn_forward <- function(dims, act, Xs, draws) {
  L <- length(dims) - 2L
  apply(draws, 1L, function(th) {
    A <- Xs
    off <- 0L
    for (l in seq_len(L + 1L)) {
      nw <- dims[l] * dims[l + 1L]
      W <- matrix(th[off + seq_len(nw)], dims[l], dims[l + 1L])
      b <- th[off + nw + seq_len(dims[l + 1L])]
      off <- off + nw + dims[l + 1L]
      Z <- A %*% W + rep(b, each = nrow(A))
      A <- if (l <= L) (if (act == "relu") pmax(Z, 0) else tanh(Z)) else Z
    }
    drop(A)
  })
}

#' Predictions of a Bayesian neural network
#'
#' The posterior predictive mean, sd and central interval at new inputs,
#' from the fit's posterior draws of the weights (each draw a network).
#'
#' @param object A fit from [svi_fit()] with `model = bnn()`.
#' @param newdata A data frame with the formula's predictors (default: the
#'   training data is not kept, so `newdata` is required).
#' @param type `"response"` (the mean of y: data units for gaussian, the
#'   probability for binomial, the rate for poisson) or `"link"` (the
#'   network's output).
#' @param interval Whether to add the interval's bounds.
#' @param level The interval's probability.
#' @param ... Not used.
#' @return A data frame with `mean`, `sd` and, with `interval = TRUE`,
#'   `lower` and `upper`. For gaussian with `type = "response"` the sd and
#'   interval are those of a new observation (the noise included); otherwise
#'   of the mean.
#' @export
predict.svi_bnn <- function(object, newdata, type = c("response", "link"), interval = TRUE,
                            level = 0.95, ...) {
  type <- svir_match_arg(type, c("response", "link"), "type")
  if (missing(newdata) || !is.data.frame(newdata)) {
    cli::cli_abort("{.arg newdata} must be a data frame with the model's predictors.", class = "svir_error")
  }
  if (!is.numeric(level) || length(level) != 1L || !(level > 0 && level < 1)) {
    cli::cli_abort("{.arg level} must be one number between 0 and 1.", class = "svir_error")
  }
  tt <- stats::delete.response(object$tt)
  need <- all.vars(tt)
  miss <- setdiff(need, names(newdata))
  if (length(miss)) {
    cli::cli_abort("{.arg newdata} lacks the model's predictor{?s} {.val {miss}}.", class = "svir_error")
  }
  mf <- stats::model.frame(tt, newdata, xlev = object$xlevels, na.action = stats::na.pass)
  X <- svir_bnn_matrix(tt, mf, object$xlevels)
  Xs <- sweep(sweep(X, 2L, object$xcenter), 2L, object$xscale, "/")
  eta <- svir_bnn_forward(object$dims, object$model$activation, Xs, object$draws)
  eta <- matrix(eta, nrow(Xs))
  fam <- object$family$family
  a <- (1 - level) / 2
  if (type == "link" || fam != "gaussian") {
    v <- if (type == "link") eta else object$family$linkinv(eta)
    if (fam == "gaussian") v <- object$ymean + object$yscale * v
    mean_v <- rowMeans(v)
  } else {
    # new observations: each draw's mean plus its noise
    lsig <- object$draws[, ncol(object$draws)]
    rng <- svir_sim_seed(object$seed %% .Machine$integer.max)
    eps <- matrix(stats::rnorm(length(eta)), nrow(eta))
    if (!is.null(rng$old)) assign(".Random.seed", rng$old, envir = .GlobalEnv)
    v <- object$ymean + object$yscale * (eta + eps * rep(exp(lsig), each = nrow(eta)))
    mean_v <- object$ymean + object$yscale * rowMeans(eta)
  }
  out <- data.frame(mean = mean_v, sd = apply(v, 1L, stats::sd))
  if (interval) {
    q <- apply(v, 1L, stats::quantile, probs = c(a, 1 - a), names = FALSE)
    out$lower <- q[1L, ]
    out$upper <- q[2L, ]
  }
  out
}

#' @export
print.svi_bnn <- function(x, ...) {
  h <- x$dims[-c(1L, length(x$dims))]
  cat(sprintf("Bayesian neural network (svir), %s family: %d input%s -> %s -> 1, %s\n",
              x$family$family, x$dims[1L], if (x$dims[1L] == 1L) "" else "s",
              if (length(h)) paste(h, collapse = " -> ") else "(no hidden layer)", x$model$activation))
  cat(sprintf("  %d parameters, %d observations; ELBO %.2f = expected log-likelihood %.2f - KL %.2f\n",
              x$npar, x$n, x$ell - x$kl, x$ell, x$kl))
  cat("  (at the final guide, on the standardised scale)\n")
  if (!is.null(x$model$kl_weight) && x$model$kl_weight != 1) {
    cat(sprintf("  fitted to a tempered objective: the weights' KL weighted %g (kl_weight)\n", x$model$kl_weight))
  }
  if (length(x$val_trace)) {
    cat(sprintf("  held-out rows: %d; their mean negative log predictive density %.4f at its best (step %d; standardised scale)\n",
                x$nval, min(x$val_trace), as.integer(x$val_best_step)))
  }
  cat(sprintf("  %d steps, stopped: %s; %.1f s on %s\n", x$steps, x$stop_reason, x$time, x$backend))
  invisible(x)
}

#' @export
nobs.svi_bnn <- function(object, ...) object$n

#' @rdname prior_summary
#' @export
prior_summary.svi_bnn <- function(object, ...) {
  d <- object$dims
  L <- length(d) - 1L
  m <- object$model
  src <- function(v) if (v == 1) "default" else "user"
  rows <- lapply(seq_len(L), function(l) {
    data.frame(class = c("w", "b"), coef = c(sprintf("layer %d (%d x %d)", l, d[l], d[l + 1L]),
                                             sprintf("layer %d (%d)", l, d[l + 1L])),
               group = "",
               prior = c(switch(m$prior %||% "normal",
                                normal = sprintf("normal(0, %.4g) (%g / sqrt(fan-in %d))", m$prior_scale / sqrt(d[l]),
                                                 m$prior_scale, d[l]),
                                laplace = sprintf("laplace(0, %.4g) (the variance of normal(0, %g / sqrt(fan-in %d)))",
                                                  m$prior_scale / sqrt(2 * d[l]), m$prior_scale, d[l]),
                                hierarchical = sprintf("normal(0, %.4g / sqrt(lambda_%d)), lambda_%d ~ gamma(6, 6)",
                                                       m$prior_scale / sqrt(d[l]), l, l)),
                         sprintf("normal(0, %g)", m$bias_scale)),
               source = c(if ((m$prior %||% "normal") != "normal") "user" else src(m$prior_scale),
                          src(m$bias_scale)))
  })
  out <- do.call(rbind, rows)
  if (object$family$family == "gaussian") {
    out <- rbind(out, data.frame(class = "sigma", coef = "", group = "",
                                 prior = sprintf("half-normal(0, %.4g) (sd 1 on the standardised scale)", object$yscale),
                                 source = "default"))
  }
  out$note <- "inputs standardised; weights on that scale"
  structure(out, class = c("svir_prior_summary", "data.frame"))
}

#' Plot a Bayesian neural network's fit
#'
#' The ELBO estimate of every step and, when rows were held out
#' (`svi_control(validation = )`), their mean negative log predictive
#' density at each window's end beside it, the kept window marked: the ELBO
#' can still rise while the held-out loss has stopped falling (the network
#' fits noise, or variational underfitting shows as a loss that never
#' falls).
#'
#' @param x A fit from [svi_fit()] with `model = bnn()`.
#' @param ... Passed to [graphics::plot()].
#' @return `x`, invisibly.
#' @export
plot.svi_bnn <- function(x, ...) {
  val <- length(x$val_trace) > 0L
  if (val) {
    op <- graphics::par(mfrow = c(1L, 2L))
    on.exit(graphics::par(op))
  }
  graphics::plot(x$elbo, type = "l", xlab = "step", ylab = "ELBO estimate",
                 main = "Bayesian neural network: ELBO", ...)
  if (val) {
    W <- x$val_best_step / which.min(x$val_trace)
    s <- W * seq_along(x$val_trace)
    graphics::plot(s, x$val_trace, type = "b", xlab = "step", ylab = "held-out loss (lower is better)",
                   main = sprintf("%d held-out rows", x$nval), ...)
    graphics::points(x$val_best_step, min(x$val_trace), pch = 19, col = "red")
  }
  invisible(x)
}

#' @export
summary.svi_bnn <- function(object, ...) {
  structure(list(fit = object, priors = prior_summary(object)), class = "summary.svi_bnn")
}

#' @export
print.summary.svi_bnn <- function(x, ...) {
  f <- x$fit
  print(f)
  cat(sprintf("  fit: %s guide, %s schedule, batch %s, %d particle%s\n", "mean-field",
              f$control$lr_schedule, if (is.null(f$control$batch_size)) "full" else f$control$batch_size,
              f$control$num_particles, if (f$control$num_particles == 1L) "" else "s"))
  cat("Priors:\n")
  print(x$priors)
  invisible(x)
}
