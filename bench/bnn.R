#!/usr/bin/env Rscript
# Bayesian neural networks (issue 18) against their peers, in one run.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/bnn.R [--lib=DIR] [--part=boston,speed] [--splits=20]
#                       [--steps=3000] [--batch=32] [--python=PY] [--out=bench/results]
#
# boston: the protocol of Hernandez-Lobato and Adams (2015) on
#   mlbench::BostonHousing (506 rows, medv on the other 13 columns, chas a
#   factor): `--splits` random 90/10 splits (seeds 1, 2, ...), one hidden
#   layer of 50 relu units. svir: svi_fit(medv ~ ., model = bnn(50)),
#   batches of `--batch` rows, `--steps` steps at a constant step size 0.01
#   (one window, so the stopping rule does not end it: the same steps as
#   NumPyro's), 1 particle. NumPyro (bench/bnn_numpyro.py, the same network,
#   priors, batch, steps and step size, AutoNormal, Adam) on the same
#   splits, standardised the same way (the training rows' means and sds),
#   started from a prior draw (--init sample: its default init_to_uniform
#   starts every weight in (-2, 2), far outside the prior, and had not
#   recovered after 3000 steps), minibatches by numpyro.plate.
#   Reported per method: test RMSE and test log-likelihood per point in
#   medv's units (the predictive density is the mean over 1000 draws of
#   N(y; mu, sigma)), the coverage of 90% predictive intervals, the time;
#   mean and standard error over the splits. Published (Gal and Ghahramani
#   2016, table): PBP 3.01 / -2.57, MC dropout 2.97 / -2.46.
# speed: per-step time at n = 50,000 synthetic rows (10 standard normal
#   inputs, y = sin(x1) + noise; both sides the same rows, NumPyro's as CSV
#   standardised as svir standardises), one hidden layer of 50, 256 and 1024
#   relu units, batches of 256 and 4096: svir's steps (the engine's loop
#   time over 200 steps, set-up excluded) and NumPyro's (its jitted update,
#   the median step after 50, compile excluded; rows drawn with replacement,
#   --subsample index, since numpyro.plate's CPU shuffle alone took 19 ms
#   a step at 4096 of 50,000 rows), with each one's ELBO after the same
#   number of steps (svir's: its expected log-likelihood less its KL at the
#   final guide, fit$ell - fit$kl; NumPyro's: minus its mean loss over the
#   last 10% of the steps) and test RMSE and log predictive density on
#   5,000 held-out rows from the same model.
# Results to stdout and <out>/bnn-<date>.md, with the BLAS that ran.
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args(
  "usage: Rscript bench/bnn.R [--lib=DIR] [--part=boston,speed] [--splits=20] [--steps=3000] [--batch=32] [--python=PY] [--out=DIR]",
  c(lib = "", part = "boston,speed", splits = "20", steps = "3000", batch = "32", python = "",
    out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
parts <- strsplit(a$part, ",", fixed = TRUE)[[1]]
python <- if (nzchar(a$python)) a$python else if (file.exists("/tmp/venv_np/bin/python")) "/tmp/venv_np/bin/python" else "python3"
np_script <- file.path(here, "bnn_numpyro.py")
steps <- as.integer(a$steps)
batch <- as.integer(a$batch)
lines <- c(sprintf("# Bayesian neural networks against their peers (%s)", format(Sys.Date())), "",
           sprintf("`Rscript bench/bnn.R --part=%s --splits=%s --steps=%d --batch=%d`; %s; BLAS %s; svir %s; %d cores.",
                   a$part, a$splits, steps, batch, R.version.string, sessionInfo()$BLAS,
                   as.character(utils::packageVersion("svir")), parallel::detectCores()), "")
say <- function(...) {
  l <- sprintf(...)
  cat(l, "\n", sep = "")
  lines <<- c(lines, l)
}

# NumPyro on a data set: its JSON result (NULL with the error as an attribute)
numpyro <- function(args) {
  out <- tempfile(fileext = ".json")
  log <- suppressWarnings(system2(python, c(np_script, args, "--out", out), stdout = TRUE, stderr = TRUE))
  if (!file.exists(out)) return(structure(NULL, error = paste(utils::tail(log, 3), collapse = " ")))
  jsonlite::fromJSON(paste(readLines(out, warn = FALSE), collapse = ""))
}

# the test metrics in medv's units from per-draw means mu (n x S) and sds
metrics <- function(y, mu, sig, lower, upper) {
  ll <- log(rowMeans(exp(stats::dnorm(y, mu, sig, log = TRUE))))
  c(rmse = sqrt(mean((y - rowMeans(mu))^2)), ll = mean(ll), cover90 = mean(y >= lower & y <= upper))
}

if ("boston" %in% parts) {
  data("BostonHousing", package = "mlbench", envir = environment())
  bh <- BostonHousing
  res <- list()
  for (sp in seq_len(as.integer(a$splits))) {
    set.seed(sp)
    te <- sort(sample.int(nrow(bh), round(0.1 * nrow(bh))))
    tr <- setdiff(seq_len(nrow(bh)), te)
    t0 <- proc.time()[["elapsed"]]
    # one window of all the steps: no early stop (with windows of 100 the
    # stopping rule stopped these batch-32 fits after about 500 steps, at
    # a worse test log-likelihood), the average of every iterate returned
    fit <- svi_fit(medv ~ ., bh[tr, ], model = bnn(hidden = 50), seed = sp,
                   control = svi_control(batch_size = batch, max_steps = steps, eval_every = steps,
                                         lr = 0.01, lr_schedule = "constant", num_particles = 1L,
                                         progress = FALSE))
    t_svir <- proc.time()[["elapsed"]] - t0
    # per-draw means and sds in medv's units, for the predictive density
    tt <- stats::delete.response(fit$tt)
    X <- svir:::svir_bnn_matrix(tt, stats::model.frame(tt, bh[te, ], xlev = fit$xlevels), fit$xlevels)
    Xs <- sweep(sweep(X, 2L, fit$xcenter), 2L, fit$xscale, "/")
    eta <- matrix(svir:::svir_bnn_forward(fit$dims, "relu", Xs, fit$draws), nrow(Xs))
    mu <- fit$ymean + fit$yscale * eta
    sig <- matrix(fit$yscale * exp(fit$draws[, ncol(fit$draws)]), nrow(mu), ncol(mu), byrow = TRUE)
    p90 <- predict(fit, bh[te, ], level = 0.9)
    m_s <- metrics(bh$medv[te], mu, sig, p90$lower, p90$upper)
    row <- data.frame(split = sp, method = "svir", t(m_s), time = t_svir, elbo = fit$ell - fit$kl)
    # NumPyro on the same standardisation
    if (file.exists(np_script)) {
      Xtr <- sweep(sweep(svir:::svir_bnn_matrix(tt, stats::model.frame(tt, bh[tr, ], xlev = fit$xlevels),
                                                fit$xlevels), 2L, fit$xcenter), 2L, fit$xscale, "/")
      colnames(Xtr) <- colnames(Xs) <- paste0("x", seq_len(ncol(Xs)))
      ftr <- tempfile(fileext = ".csv")
      fte <- tempfile(fileext = ".csv")
      utils::write.csv(data.frame(Xtr, y = (bh$medv[tr] - fit$ymean) / fit$yscale), ftr, row.names = FALSE)
      utils::write.csv(data.frame(Xs, y = (bh$medv[te] - fit$ymean) / fit$yscale), fte, row.names = FALSE)
      t0 <- proc.time()[["elapsed"]]
      np <- numpyro(c("--train", ftr, "--test", fte, "--hidden", "50", "--act", "relu",
                      "--batch", batch, "--steps", steps, "--lr", "0.01", "--seed", sp,
                      "--ndraws", "1000", "--init", "sample"))
      t_np <- proc.time()[["elapsed"]] - t0
      if (!is.null(np)) {
        # its predictive of y: mean and sd (noise included), as a normal
        pm <- fit$ymean + fit$yscale * unlist(np$pred_mean)
        psd <- fit$yscale * unlist(np$pred_sd)
        y <- bh$medv[te]
        z <- stats::qnorm(0.95)
        m_n <- c(rmse = sqrt(mean((y - pm)^2)), ll = mean(stats::dnorm(y, pm, psd, log = TRUE)),
                 cover90 = mean(abs(y - pm) <= z * psd))
        row <- rbind(row, data.frame(split = sp, method = "numpyro", t(m_n), time = t_np,
                                     elbo = np$elbo_final))
      } else {
        say("  numpyro failed on split %d: %s", sp, attr(np, "error"))
      }
    }
    res[[sp]] <- row
    cat(sprintf("split %2d: %s\n", sp, paste(sprintf("%s RMSE %.2f LL %.2f cover %.2f %.1f s", row$method,
                                                      row$rmse, row$ll, row$cover90, row$time), collapse = " | ")))
  }
  tab <- do.call(rbind, res)
  say("## Boston housing, %d splits 90/10, one hidden layer of 50 relu units, batch %d, %d steps", length(res), batch, steps)
  say("")
  say("| method | test RMSE (mean +- se) | test log-likelihood | 90%% interval coverage | time per split (s) |")
  say("|---|---:|---:|---:|---:|")
  for (m in unique(tab$method)) {
    s <- tab[tab$method == m, ]
    se <- function(v) stats::sd(v) / sqrt(length(v))
    say("| %s | %.2f +- %.2f | %.2f +- %.2f | %.2f | %.1f |", m, mean(s$rmse), se(s$rmse), mean(s$ll),
        se(s$ll), mean(s$cover90), stats::median(s$time))
  }
  say("| PBP (published) | 3.01 +- 0.18 | -2.57 +- 0.09 | | |")
  say("| MC dropout (published) | 2.97 +- 0.19 | -2.46 +- 0.06 | | |")
  say("")
  say("NumPyro's log-likelihood and coverage use a normal with its predictive draws' mean and sd (its draws are not returned); svir's the mixture over its 1000 draws.")
  say("")
}

if ("speed" %in% parts) {
  n <- 50000L
  nt <- 5000L
  set.seed(11)
  X <- matrix(stats::rnorm((n + nt) * 10), n + nt, dimnames = list(NULL, paste0("x", 1:10)))
  dall <- data.frame(X, y = sin(X[, 1]) + stats::rnorm(n + nt, sd = 0.1))
  d <- dall[seq_len(n), ]
  dt <- dall[n + seq_len(nt), ]
  say("## Per-step time, n = %d, 10 inputs, one hidden layer (relu)", n)
  say("")
  say("| width | batch | svir ms/step (range) | NumPyro ms/step | NumPyro / svir | svir ELBO | NumPyro ELBO | svir test RMSE, LL | NumPyro test RMSE, LL |")
  say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  reps <- 3L
  ftr <- fte <- NULL
  for (h in c(50L, 256L, 1024L)) for (b in c(256L, 4096L)) {
    ns <- 200L
    # svir: the median over `reps` fits of the loop's own time per step
    # (the draws, the pass, the backward pass and the updates)
    ms <- numeric(reps)
    for (k in seq_len(reps)) {
      fit <- svi_fit(y ~ ., d, model = bnn(hidden = h), seed = 1,
                     control = svi_control(batch_size = b, max_steps = ns, eval_every = ns, lr = 0.01,
                                           lr_schedule = "constant", num_particles = 1L, ndraws = 200L,
                                           progress = FALSE))
      ms[k] <- 1e3 * sum(fit$time_split[1:4]) / fit$steps
    }
    ms_s <- stats::median(ms)
    # the test rows' metrics in y's units: svir's predictive density the
    # mixture over its 200 draws
    tt <- stats::delete.response(fit$tt)
    Xt <- svir:::svir_bnn_matrix(tt, stats::model.frame(tt, dt), fit$xlevels)
    Xts <- sweep(sweep(Xt, 2L, fit$xcenter), 2L, fit$xscale, "/")
    mu <- fit$ymean + fit$yscale * matrix(svir:::svir_bnn_forward(fit$dims, "relu", Xts, fit$draws), nt)
    sig <- matrix(fit$yscale * exp(fit$draws[, ncol(fit$draws)]), nt, ncol(mu), byrow = TRUE)
    m_s <- c(rmse = sqrt(mean((dt$y - rowMeans(mu))^2)),
             ll = mean(log(rowMeans(exp(stats::dnorm(dt$y, mu, sig, log = TRUE))))))
    # NumPyro on the same rows, standardised as svir's (written once)
    if (is.null(ftr)) {
      Xs <- sweep(sweep(as.matrix(d[, 1:10]), 2L, fit$xcenter), 2L, fit$xscale, "/")
      colnames(Xs) <- colnames(Xts) <- paste0("x", 1:10)
      ftr <- tempfile(fileext = ".csv")
      fte <- tempfile(fileext = ".csv")
      utils::write.csv(data.frame(Xs, y = (d$y - fit$ymean) / fit$yscale), ftr, row.names = FALSE)
      utils::write.csv(data.frame(Xts, y = (dt$y - fit$ymean) / fit$yscale), fte, row.names = FALSE)
    }
    # NumPyro: the median over two runs of its median step
    np <- NULL
    ms_n <- NA
    m_n <- c(rmse = NA, ll = NA)
    if (file.exists(np_script)) {
      nps <- lapply(1:2, function(k) numpyro(c("--train", ftr, "--test", fte, "--hidden", h, "--act", "relu",
                                                "--batch", b, "--steps", ns, "--lr", "0.01", "--seed", "1",
                                                "--ndraws", "200", "--init", "sample", "--subsample", "index")))
      ok <- !vapply(nps, is.null, TRUE)
      if (any(ok)) {
        np <- nps[[which(ok)[1]]]
        ms_n <- stats::median(vapply(nps[ok], function(x) x$step_ms_median, 0))
        # its predictive of y as a normal with its draws' mean and sd
        pm <- fit$ymean + fit$yscale * unlist(np$pred_mean)
        psd <- fit$yscale * unlist(np$pred_sd)
        m_n <- c(rmse = sqrt(mean((dt$y - pm)^2)), ll = mean(stats::dnorm(dt$y, pm, psd, log = TRUE)))
      }
    }
    say("| %d | %d | %.3f (%.3f-%.3f) | %.3f | %.2f | %.4g | %.4g | %.3f, %.2f | %.3f, %.2f |", h, b, ms_s,
        min(ms), max(ms), ms_n, ms_n / ms_s, fit$ell - fit$kl, if (is.null(np)) NA else np$elbo_final,
        m_s[["rmse"]], m_s[["ll"]], m_n[["rmse"]], m_n[["ll"]])
  }
  say("")
  say("svir's ms/step: the median (and range) over %d fits of its loop's time (the pre-activations' draws and forward pass, the likelihood, the backward pass, Adam) over %d steps, set-up and outputs excluded, on its default threads; NumPyro's: the median over two runs of its median step after the first 50, compile excluded (its rows drawn with replacement). Test metrics on %d held-out rows from the same model (y = sin(x1) + N(0, 0.1^2); RMSE and log predictive density per row in y's units): svir's predictive the mixture over 200 draws, NumPyro's a normal with its 200 predictive draws' mean and sd.", reps, 200L, nt)
  say("")
}
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(a$out, sprintf("bnn-%s.md", format(Sys.Date()))))
