#!/usr/bin/env Rscript
# SVI's partial centring (svi_control(centre = ); issue 16, point 1), in
# one run, against the non-centred guide (centre = "none"):
#   1. bench/datarich.R's smallest Gaussian case (10 levels of 1000 rows
#      crossed with 2000 of 5; test-window.R's data): sd(g2) over seeds, for
#      both guides, against lmer;
#   2. InstEval (instructors nested in departments): "auto" (which leaves
#      the nested pair non-centred), "none", and 1 (every term centred):
#      sd(dept) against lmer;
#   3. Salamanders (Poisson): fits with prior weights against fits to the
#      replicated rows (they should agree), and the ELBO of the final guide
#      (the mean log ratio of 4000 posterior draws);
#   4. the learned centring (centre = "learn") on case 1's data, from the
#      rule's lambda and from three other starts (0.05, 0.5, 0.95 for both
#      terms, set through the engine's spec): where lambda ends, sd(g2), and
#      the last window's mean ELBO;
#   5. a term of several columns, (x | g) with 1000 rows per level (Poisson
#      and Gaussian, 2 x 10^5 rows, 200 levels; bench/datarich.R's
#      yardstick sd / sqrt(2 J) against glmer/lmer) and sleepstudy's (Days |
#      Subject) (the ELBO of the final mean-field guide, the draws' mean log
#      ratio, and the sds), both guides, "auto" against "none".
# Usage (from the repository root, with svir installed):
#   Rscript bench/centre.R [--lib=DIR] [--seeds=3] [--out=DIR]
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/centre.R [--lib=DIR] [--seeds=3] [--out=DIR]",
                c(lib = "", seeds = "3", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
source(file.path(here, "..", "tests", "testthat", "helper-sim.R"))
seeds <- seq_len(as.integer(a$seeds))
out <- character()
say <- function(...) {
  line <- sprintf(...)
  cat(line, "\n")
  out <<- c(out, line)
}
fmt <- function(x) paste(sprintf("%.3f", x), collapse = ", ")
sdc <- function(f, grp) {
  v <- as.data.frame(VarCorr(f))
  v$sdcor[v$grp == grp]
}

# 1. data-rich levels
d <- sim_datarich_1e4()
ref <- as.data.frame(lme4::VarCorr(lme4::lmer(y ~ x + (1 | g1) + (1 | g2), d)))
say("1. 10 x 1000 rows crossed with 2000 x 5: lmer sd(g2) %.3f; seeds %s", ref$sdcor[ref$grp == "g2"],
    paste(seeds, collapse = ", "))
for (guide in c("meanfield", "fullrank")) for (cen in c("auto", "learn", "none")) {
  fs <- lapply(seeds, function(s) suppressWarnings(svi_fit(y ~ x + (1 | g1) + (1 | g2), d,
    method = "svi", guide = guide, seed = s, control = svi_control(centre = cen))))
  say("   %-9s centre %-5s (lambda %s): sd(g2) %s", guide, cen,
      paste(vapply(fs, function(f) fmt(f$centre), ""), collapse = " / "),
      fmt(vapply(fs, sdc, 0, grp = "g2")))
}

# 2. InstEval
ie <- lme4::InstEval
ref <- as.data.frame(lme4::VarCorr(lme4::lmer(y ~ service + (1 | s) + (1 | d) + (1 | dept), ie)))
say("2. InstEval: lmer sd(dept) %.4f", ref$sdcor[ref$grp == "dept"])
for (cen in list("auto", "none", 1)) {
  fs <- lapply(seeds[seq_len(min(2, length(seeds)))], function(s)
    svi_fit(y ~ service + (1 | s) + (1 | d) + (1 | dept), ie, seed = s,
            control = svi_control(centre = cen)))
  say("   centre %-4s (lambda s, d, dept: %s): sd(dept) %s", format(cen), fmt(fs[[1]]$centre),
      fmt(vapply(fs, sdc, 0, grp = "dept")))
}

# 3. Salamanders
s <- glmmTMB::Salamanders
s$w <- rep(1:2, length.out = nrow(s))
rep_s <- s[rep(seq_len(nrow(s)), s$w), ]
say("3. Salamanders, count ~ mined + (1 | site), Poisson")
for (cen in c("auto", "none")) {
  dd <- vapply(seeds, function(seed) {
    f1 <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), weights = w, seed = seed,
                  method = "svi", control = svi_control(centre = cen))
    f2 <- svi_fit(count ~ mined + (1 | site), rep_s, family = poisson(), seed = seed,
                  method = "svi", control = svi_control(centre = cen))
    max(abs(fixef(f1) - fixef(f2)) / sqrt(diag(vcov(f2))))
  }, 0)
  f <- svi_fit(count ~ mined + (1 | site), s, family = poisson(), seed = 1, method = "svi",
               control = svi_control(centre = cen, ndraws = 4000))
  lr <- f$engine$log_ratio
  say("   centre %-4s (lambda %s): weighted vs replicated max |d fixef| / se %s; ELBO %.2f (se %.2f)",
      cen, fmt(f$centre), fmt(dd), mean(lr), sd(lr) / sqrt(length(lr)))
}

# 4. the learned centring from other starts: the engine's spec directly (the
# API starts it at the rule's lambda)
ns <- asNamespace("svir")
b <- ns$svir_build_spec(y ~ x + (1 | g1) + (1 | g2), d)
say("4. centre = \"learn\" on case 1's data (mean-field) from given starts: lambda at the end; sd(g2) (exp of its guide mean); last window's mean ELBO")
for (start in list(c(0.05, 0.05), c(0.5, 0.5), c(0.95, 0.95))) for (seed in seeds) {
  sp <- b$spec
  sp$init_mu <- ns$svir_init_mu(sp, b$info)
  sp$centre <- start
  sp$centre_learn <- 1L
  e <- .Call(ns$C_svir_fit_r, sp, list(method = "svi", seed = seed, guide = "meanfield",
                                       eval_every = 100L, num_particles = 1L, ndraws = 10L))
  i2 <- which(b$info$layout$class == "sd")[2]
  say("   start %s, seed %d: lambda %s; sd(g2) %.3f; ELBO %.2f", fmt(start), seed, fmt(e$centre),
      exp(e$mu[i2]) * b$info$scaling$y_scale, tail(e$window_elbo, 1))
}

# 5. terms of several columns
say("5. (x | g), 200 levels of 1000 rows, sd(Intercept) 0.5, sd(x) 0.3, cor 0.3; z = (svir - lme4) / (lme4 / sqrt(2 J))")
sim_slope <- function(family, n = 2e5, J = 200) {
  set.seed(20261205)
  g <- factor(sample.int(J, n, TRUE), levels = seq_len(J))
  x <- rnorm(n)
  b <- matrix(rnorm(2 * J), J) %*% chol(matrix(c(0.25, 0.045, 0.045, 0.09), 2))
  eta <- 0.3 + 0.5 * x + b[g, 1] + b[g, 2] * x
  y <- if (family == "poisson") rpois(n, exp(eta)) else rnorm(n, eta + 0.7, 1)
  data.frame(y, x, g)
}
sds <- function(vc) vc$sdcor[is.na(vc$var2)]
for (family in c("poisson", "gaussian")) {
  d5 <- sim_slope(family)
  t0 <- proc.time()[[3]]
  ref <- if (family == "poisson") {
    lme4::glmer(y ~ x + (x | g), d5, family = poisson)
  } else {
    lme4::lmer(y ~ x + (x | g), d5)
  }
  rs <- sds(as.data.frame(lme4::VarCorr(ref))[1:3, ])
  say("   %s: lme4 sd %s (%.1f s)", family, fmt(rs[1:2]), proc.time()[[3]] - t0)
  for (guide in c("meanfield", "fullrank")) for (cen in c("auto", "none")) {
    zz <- vapply(seeds, function(seed) {
      f <- svi_fit(y ~ x + (x | g), d5, family = get(family)(), method = "svi", guide = guide,
                   seed = seed, control = svi_control(centre = cen))
      (sds(as.data.frame(VarCorr(f)))[1:2] - rs[1:2]) / (rs[1:2] / sqrt(2 * 200))
    }, numeric(2))
    say("   %-9s centre %-4s: z sd(Intercept) %s; z sd(x) %s", guide, cen, fmt(zz[1, ]), fmt(zz[2, ]))
  }
}
for (guide in c("meanfield", "fullrank")) for (cen in c("auto", "none")) {
  fs <- lapply(seeds, function(seed) svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy,
                                              method = "svi", guide = guide, seed = seed,
                                              control = svi_control(centre = cen, ndraws = 4000)))
  say("   sleepstudy %-9s centre %-4s (lambda %.2f): ELBO %s; draws' mean log ratio %s; sd(Intercept) %s; sd(Days) %s",
      guide, cen, fs[[1]]$centre, fmt(vapply(fs, function(f) mean(tail(f$elbo, 100)), 0)),
      fmt(vapply(fs, function(f) mean(f$engine$log_ratio), 0)),
      fmt(vapply(fs, function(f) sds(as.data.frame(VarCorr(f)))[1], 0)),
      fmt(vapply(fs, function(f) sds(as.data.frame(VarCorr(f)))[2], 0)))
}

dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
path <- file.path(a$out, sprintf("centre-%s.md", format(Sys.Date())))
writeLines(c(sprintf("# Partial centring against the non-centred guide (%s)", format(Sys.Date())), "",
             sprintf("`Rscript bench/centre.R --seeds=%s`; R %s, BLAS %s; svir %s.", a$seeds,
                     getRversion(), basename(extSoftVersion()[["BLAS"]]),
                     as.character(utils::packageVersion("svir"))), "", "```", out, "```"), path)
cat("Wrote", path, "\n")
