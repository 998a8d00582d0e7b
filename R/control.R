# Control of the SVI optimiser (dev/ARCHITECTURE.md, section 6).

#' Check a whole-number control
#'
#' @param x Value.
#' @param arg Argument name.
#' @param min Smallest allowed value.
#' @return `x` as integer.
#' @noRd
svir_check_whole <- function(x, arg, min = 1L, max = .Machine$integer.max, why = NULL) {
  ok <- is.numeric(x) && length(x) == 1L && !is.na(x) && is.finite(x) &&
    abs(x - round(x)) < 1e-8
  if (!ok || x < min) {
    cli::cli_abort(
      c("{.arg {arg}} must be a whole number of at least {min}.",
        "x" = "You supplied {.code {deparse1(x)}}.", "i" = why),
      class = "svir_error", call = NULL
    )
  }
  if (x > max) {
    cli::cli_abort(
      c("{.arg {arg}} must be at most {format(max, big.mark = ',', scientific = FALSE)}.",
        "x" = "You supplied {.code {deparse1(x)}}.", "i" = why),
      class = "svir_error", call = NULL
    )
  }
  as.integer(round(x))
}

#' Check a real-valued control
#'
#' @param x Value.
#' @param arg Argument name.
#' @param lower,upper Bounds (exclusive).
#' @return `x` as double.
#' @noRd
svir_check_real <- function(x, arg, lower = 0, upper = Inf) {
  ok <- is.numeric(x) && length(x) == 1L && !is.na(x) && is.finite(x) &&
    x > lower && x < upper
  if (!ok) {
    range <- if (is.finite(upper)) {
      sprintf("strictly between %s and %s", lower, upper)
    } else {
      sprintf("a finite number greater than %s", lower)
    }
    cli::cli_abort(
      c("{.arg {arg}} must be {range}.",
        "x" = "You supplied {.code {deparse1(x)}}."),
      class = "svir_error", call = NULL
    )
  }
  as.double(x)
}

#' Control the stochastic variational inference optimiser
#'
#' Settings of the optimiser used by `svi_fit()`: the number of steps, the
#' step size (Adam's learning rate) and its schedule, the stopping rule, the
#' Monte Carlo and minibatch sizes, threads and the number of posterior draws
#' kept.
#'
#' @section The stopping rule:
#' The ELBO estimates are averaged over consecutive windows of `eval_every`
#' steps. A window is a *plateau* when its mean ELBO exceeds the previous
#' window's by less than `tol_rel_obj * |mean ELBO|` or by less than two
#' standard errors of the difference of the two window means (the
#' improvement is lost in the Monte Carlo noise). What happens then depends
#' on `lr_schedule`:
#' * `"plateau"` (default): the step size is multiplied by `lr_decay`,
#'   Adam's moment estimates restart (so that early, large gradients no
#'   longer damp the steps) and the comparison restarts with the next window. After `patience` such
#'   reductions, the next plateau ends the fit as converged. Small final step
#'   sizes reduce the noise of the final estimates.
#' * `"constant"`: the step size stays `lr`; the first plateau ends the fit.
#' * `"decay"`: the step size at step `t` is `lr / sqrt(1 + t / eval_every)`;
#'   the first plateau ends the fit.
#'
#' The fit otherwise stops after `max_steps` steps (stop reason
#' `"max_steps"`). A step whose ELBO or gradient is not finite is rejected
#' and halves the step size; 10 rejections in a row end the fit as
#' `"diverged"`. The reported variational parameters are the average of the
#' iterates over the last complete window, which removes most of the
#' step-to-step noise of stochastic optimisation.
#'
#' @param max_steps Largest number of optimisation steps.
#' @param lr Step size (learning rate) of Adam, greater than 0, or `NULL`
#'   (default) for 0.05 with the mean-field guide and 0.02 with the full-rank
#'   guide, whose off-diagonal scales make larger steps unstable.
#' @param lr_schedule Step-size schedule: `"plateau"`, `"constant"`,
#'   `"decay"` (see the stopping rule below) or `"onecycle"`: over the first
#'   30% of `max_steps` the step size rises from `lr / 25` to `lr`, then falls
#'   to `lr / 250000` at `max_steps`, both along half a cosine (PyTorch's
#'   `OneCycleLR` defaults); such a fit runs all `max_steps` (the stopping
#'   rule does not end it, early stopping on `validation` rows may).
#' @param lr_decay Factor (between 0 and 1) by which the `"plateau"` schedule
#'   multiplies the step size at each plateau.
#' @param eval_every Window length, in steps, of the stopping rule: at
#'   least 10, since a window must be long enough to estimate its noise; or
#'   `NULL` (default): 100 steps up to 10^5 observations, then
#'   `100 * sqrt(n / 10^5)`, and three times that with the full-rank guide,
#'   at most 400. With large data a step's ELBO estimate is noisy next to
#'   the slow drift of the variance components, and shorter windows stopped
#'   fits far from their optimum; much longer ones (950 steps) let a
#'   full-rank fit wander for 10000 steps (`bench/README.md`, "Variance
#'   components from data-poor to data-rich levels").
#' @param tol_rel_obj Relative tolerance on the change of the window-mean
#'   ELBO, greater than 0.
#' @param patience Number of step-size reductions of the `"plateau"`
#'   schedule before the next plateau stops the fit (0 stops at the first).
#'   A window whose mean ELBO falls below the best window's by more than
#'   `10 * tol_rel_obj` of it and four standard errors (an optimiser thrown
#'   out of its basin) is not a plateau: the fit goes back to the best
#'   window's average parameters with a smaller step, and after four such
#'   falls it stops there.
#' @param num_particles Monte Carlo draws per step for the ELBO gradient;
#'   more draws give a less noisy gradient at a proportional cost. `NULL`
#'   (default) chooses `min(8, ceiling(4000 / B))` for a batch of `B`
#'   observations: several draws where a step is cheap, one for large data;
#'   networks ([bnn()]) take one (their local reparameterisation already
#'   draws each row's pre-activations afresh).
#' @param stl Use the path-derivative ("sticking the landing", Roeder et al.
#'   2017) gradient of the entropy and of the random effects' prior: an
#'   unbiased estimator whose variance vanishes as the guide approaches the
#'   posterior, so that late steps are far less noisy. `FALSE` uses the
#'   closed-form gradients of those terms.
#' @param batch_size Observations per minibatch, or `NULL` for full batches.
#'   With minibatches the likelihood is rescaled by `n / batch_size`
#'   automatically, and only the random effects of the groups present in a
#'   batch are updated. Must not exceed the number of observations.
#' @param threads Number of CPU threads, or `NULL` (stored as `0`): one
#'   thread per 100,000 observations in a step (for `method = "qem"`, per
#'   100,000 of `K n + K^2 J`, its work per iteration with `J` groups), at
#'   most as many as OpenMP makes available. Below that size a second thread costs more in
#'   synchronisation than it saves, and much more on a machine busy with other
#'   work. Results are reproducible for a given number of threads.
#' @param ndraws Number of draws from the fitted approximate posterior kept
#'   in the fit, for summaries, intervals and predictions.
#' @param is_draws For `method = "laplace"`: the importance sampler's
#'   draws per round (at least 100); `method = "auto"` takes at most this
#'   many, fewer for large models (see [svi_fit()]). More draws give a
#'   steadier k-hat and tails; the work grows in proportion.
#' @param init_scale Initial standard deviation of the variational
#'   distributions (on the internal, standardised scale), greater than 0.
#' @param K For `method = "qem"`: samples of every latent per iteration, from
#'   2 to 256. An iteration costs about `K^2` likelihood evaluations per
#'   observation (`K` per observation plus `K^2` per group for Gaussian
#'   models and Poisson random intercepts), and larger `K` needs fewer
#'   iterations. The default, 16, comes from `bench/qem.R` (see the
#'   package's `bench/README.md`): within a small factor of the fastest `K`
#'   on every data set there, and with a final bound within 0.07 nats of the
#'   best. QEM's starting approximation is described under `method` in
#'   [svi_fit()]; it ignores `init_scale`.
#' @param keep_path Keep the approximate posterior every `keep_path` steps
#'   (iterations for QEM) in the fit's element `path`, for studying
#'   convergence; `0` (default) keeps none. For SVI each kept value is the
#'   average of the iterates since the previous one (as the reported
#'   parameters are window averages), for QEM the proposal itself. The
#'   element holds the steps, the seconds since the loop began, and the
#'   parameters in the engine's internal layout; `bench/qem.R` evaluates them
#'   with one common bound. Not available with `backend = "cuda"`.
#' @param warm_start With `guide = "fullrank"` (SVI): start from a
#'   mean-field fit's optimum (`TRUE`, default), or from the default start
#'   (`FALSE`). The mean-field fit runs first with the same settings (its
#'   own step size and window when those are defaults); the fit's `time`
#'   includes it and `fit$engine$warm_start` records its steps. From the
#'   default start the full-rank guide stopped far from its optimum when a
#'   term has levels with thousands of rows (sd 0.37 against lmer's 0.26 at
#'   10^6 rows; 0.25 from the warm start).
#' @param centre SVI's parameterisation of each random-effect term:
#'   `"auto"` (default) chooses its partial centring `lambda` from the
#'   data, `"none"` keeps every term non-centred (`lambda = 0`, the only
#'   parameterisation before this option), and a number in \[0, 1\] sets
#'   `lambda` for every term. For a one-column term the guide is on `u = b /
#'   sd^(1 - lambda)`: `lambda = 0` is the non-centred `z = b / sd`, `lambda
#'   = 1` the centred `b` itself. For a term of several columns (`(x | g)`)
#'   it is on `u` with `b = D^-lambda ((1 - lambda) A + lambda D) u`, `A = D
#'   L` the non-centred map (`D = diag(sd)`, `L` the correlations' Cholesky
#'   factor): `A` at 0, the identity at 1
#'   (Papaspiliopoulos, Roberts and Skold 2003; Gorinova, Moore and Hoffman
#'   2020). `"auto"` takes for each term the median over its levels of the
#'   data's share of a level's precision, `I_j s^2 / (1 + I_j s^2)`, with
#'   `I_j` the Fisher information of the level's rows at the GLM start and
#'   `s` a moment estimate of the term's sd from the GLM's working
#'   residuals (for a term of several columns, the median over its levels
#'   and columns, each column taken alone): near 1 for levels with many
#'   rows, where the non-centred
#'   guide drifts slowly along the ridge between the sd and the effects,
#'   near 0 for levels with a few binary rows or a term with little
#'   variance. A term nested in another, or with another nested in it,
#'   stays non-centred: its effects trade off against its children's mean,
#'   which the guide's independent groups do not follow, and centring them
#'   moved InstEval's sd(dept) by seed (`bench/centre.R`). QEM and the
#'   CUDA backend stay non-centred.
#'   `"learn"` starts each one-column term at the rule's `lambda` (within 0.01
#'   and 0.99) and learns it as Gorinova et al. do: at the end of every
#'   window after the first, one step on `logit(lambda)` along the window's
#'   mean gradient of the ELBO over its root mean square (at most 1), with
#'   the guide's parameters moved so that each group's `q(b)` stays put;
#'   `fit$centre` holds the learned values and `fit$centre_start` the start.
#'   The ELBO is nearly flat in `lambda`, so the learned value wanders by
#'   seed (on `bench/centre.R`'s data-rich case from 0.315 to between 0.25
#'   and 0.73 for the data-poor term) while the variance components stay
#'   where the rule puts them; hence `"auto"` is the default. A term of
#'   several columns keeps the rule's `lambda`. Not with
#'   `keep_path`. [summary.svi_fit()] prints the choice.
#' @param validation For [bnn()] fits: the share of the rows held out at
#'   random (0: none). At the end of each window of `eval_every` steps the
#'   held-out rows' mean negative log predictive density is evaluated at the
#'   window's average guide; the fit stops after `patience` windows without
#'   improvement (stop reason `"early_stop"`) and returns the best window's
#'   guide. The trace is in `fit$val_trace`. Other models ignore it.
#' @param progress Show a progress bar while fitting.
#' @return An object of class `"svi_control"`: a list with the validated
#'   values (integers for counts, `batch_size` `NULL` for full batches,
#'   `threads` `0` for the default).
#' @examples
#' svi_control()
#' svi_control(max_steps = 5000, lr = 0.02, lr_schedule = "constant")
#' svi_control(batch_size = 256, num_particles = 4, threads = 2)
#' @export
svi_control <- function(max_steps = 10000L, lr = NULL,
                        lr_schedule = c("plateau", "constant", "decay", "onecycle"),
                        lr_decay = 0.3, eval_every = NULL, tol_rel_obj = 1e-4,
                        patience = 3L, num_particles = NULL, stl = TRUE,
                        batch_size = NULL,
                        threads = NULL, ndraws = 1000L, is_draws = 4000L, init_scale = 0.1,
                        K = 16L, keep_path = 0L, warm_start = TRUE, centre = "auto",
                        validation = 0, progress = interactive()) {
  schedules <- c("plateau", "constant", "decay", "onecycle")
  if (missing(lr_schedule) || identical(lr_schedule, schedules)) {
    lr_schedule <- "plateau"
  }
  if (!is.character(lr_schedule) || length(lr_schedule) != 1L || is.na(lr_schedule) ||
      is.na(pmatch(lr_schedule, schedules))) {
    cli::cli_abort(
      c("{.arg lr_schedule} must be one of {.val {schedules}}.",
        "x" = "You supplied {.code {deparse1(lr_schedule)}}."),
      class = "svir_error", call = NULL
    )
  }
  lr_schedule <- schedules[pmatch(lr_schedule, schedules)]
  if (!is.null(batch_size)) batch_size <- svir_check_whole(batch_size, "batch_size", 1L)
  threads <- if (is.null(threads)) 0L else svir_check_whole(threads, "threads", 0L)
  progress <- svir_check_flag(progress, "progress")
  out <- list(
    max_steps = svir_check_whole(max_steps, "max_steps", 1L, 1e8,
      why = "The fit keeps the ELBO of every step (8 bytes each); a fit that needs more steps needs a larger {.arg lr} or {.arg batch_size}."),
    lr = if (is.null(lr)) NULL else svir_check_real(lr, "lr"),
    lr_schedule = lr_schedule,
    lr_decay = svir_check_real(lr_decay, "lr_decay", 0, 1),
    eval_every = if (is.null(eval_every)) NULL else svir_check_whole(eval_every, "eval_every", 10L,
      why = "The stopping rule compares the mean ELBO of windows of {.arg eval_every} steps with their noise, which fewer steps cannot estimate."),
    tol_rel_obj = svir_check_real(tol_rel_obj, "tol_rel_obj"),
    patience = svir_check_whole(patience, "patience", 0L),
    num_particles = if (is.null(num_particles)) NULL else
      svir_check_whole(num_particles, "num_particles", 1L),
    stl = svir_check_flag(stl, "stl"),
    batch_size = batch_size,
    threads = threads,
    ndraws = svir_check_whole(ndraws, "ndraws", 1L),
    is_draws = svir_check_whole(is_draws, "is_draws", 100L),
    init_scale = svir_check_real(init_scale, "init_scale"),
    K = svir_check_K(K),
    keep_path = svir_check_whole(keep_path, "keep_path", 0L),
    warm_start = svir_check_flag(warm_start, "warm_start"),
    centre = svir_check_centre(centre),
    validation = if (is.numeric(validation) && length(validation) == 1L && !is.na(validation) &&
                     validation == 0) 0 else svir_check_real(validation, "validation", 0, 0.9),
    progress = progress
  )
  structure(out, class = "svi_control")
}

#' @export
print.svi_control <- function(x, ...) {
  cat("svir control settings\n")
  vals <- vapply(names(x), function(nm) {
    v <- x[[nm]]
    if (is.null(v)) {
      switch(nm,
        batch_size = "NULL (full batch)",
        lr = "NULL (0.05 mean-field, 0.02 full-rank)",
        num_particles = "NULL (min(8, ceiling(4000 / batch)))",
        "NULL")
    } else if (nm == "threads" && identical(v, 0L)) {
      "0 (one per 100,000 observations in a step)"
    } else {
      format(v)
    }
  }, "")
  cat(sprintf("  %-14s %s\n", names(x), vals), sep = "")
  invisible(x)
}

svir_check_K <- function(K) {
  K <- svir_check_whole(K, "K", 2L)
  if (K > 256L) {
    cli::cli_abort(c("{.arg K} must be at most 256.", "x" = "You supplied {K}."),
                   class = "svir_error", call = NULL)
  }
  K
}

svir_check_flag <- function(x, arg) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) {
    cli::cli_abort(
      c("{.arg {arg}} must be {.val TRUE} or {.val FALSE}.",
        "x" = "You supplied {.code {deparse1(x)}}."),
      class = "svir_error", call = NULL
    )
  }
  x
}

#' Check the minibatch size against the number of observations
#'
#' @param control An `svi_control` object.
#' @param n Number of observations.
#' @return `control`, invisibly.
#' @noRd
svir_check_batch <- function(control, n) {
  bs <- control$batch_size
  if (!is.null(bs) && bs > n) {
    cli::cli_abort(
      c("{.arg batch_size} ({bs}) is larger than the number of observations ({n}).",
        "i" = "Use a value in 1..{n}, or {.code NULL} for full batches."),
      class = "svir_error", call = NULL
    )
  }
  invisible(control)
}

#' Coerce the user's `control` argument
#'
#' @param control `NULL`, an `svi_control` object or a list of its arguments.
#' @return An `svi_control` object.
#' @noRd
# The default window of the stopping rule (svi_control(eval_every = NULL))
# for SVI on n observations with `guide`: 100 steps up to 10^5
# observations, then 100 sqrt(n / 10^5), times 3 for the full-rank guide,
# at most 400. Measured on crossed GLMMs (bench/datarich.R, and by hand:
# mean-field at n = 10^6 and full-rank at 2 x 10^5 stopped with sd(g2)
# 0.320 and 0.418 against lmer's 0.257 and 0.309 at 100 steps, and reached
# 0.258 and 0.305 at 300), and on a Poisson model with random intercepts
# and slopes at n = 10^6: intercept 0.302 (true 0.3) with windows of 100 or
# 320 steps for either guide, but 0.147 after 10000 steps without
# converging with full-rank and 950 (hence the cap).
svir_default_window <- function(n, guide) {
  w <- 100 * sqrt(max(1, n / 1e5)) * (if (identical(guide, "fullrank")) 3 else 1)
  as.integer(min(400, 10 * round(w / 10)))
}

svir_as_control <- function(control) {
  if (is.null(control)) return(svi_control())
  if (inherits(control, "svi_control")) return(control)
  if (is.list(control)) {
    bad <- setdiff(names(control), names(formals(svi_control)))
    if (length(bad) || is.null(names(control)) || any(names(control) == "")) {
      cli::cli_abort(
        c("{.arg control} has unknown setting{?s} {.val {bad}}.",
          "i" = "Make it with {.code svi_control()}; its arguments are {.arg {names(formals(svi_control))}}."),
        class = "svir_error", call = NULL
      )
    }
    return(do.call(svi_control, control))
  }
  cli::cli_abort(
    c("{.arg control} must be made by {.fun svi_control}.",
      "i" = "For example {.code control = svi_control(max_steps = 5000)}."),
    class = "svir_error", call = NULL
  )
}

svir_check_centre <- function(centre) {
  if (identical(centre, "auto") || identical(centre, "none") || identical(centre, "learn")) {
    return(centre)
  }
  if (is.numeric(centre) && length(centre) == 1L && is.finite(centre) && centre >= 0 &&
      centre <= 1) {
    return(as.double(centre))
  }
  cli::cli_abort(c("{.arg centre} must be {.val auto}, {.val learn}, {.val none} or a number between 0 and 1.",
                   x = "You supplied {.code {deparse1(centre)}}."),
                 class = "svir_error", call = NULL)
}
