#!/usr/bin/env Rscript
# Count mixtures (issue 17): svir's count_mixture() against R's peers on the
# same simulated single-cell-like counts, in one run: adjusted Rand index
# against the simulated labels, and wall time.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/mixture.R [--lib=DIR] [--n=1000] [--p=200] [--K=5]
#                           [--seeds=2] [--fits=svir,flexmix,mclust,kmeans,dmn]
#                           [--Ks=] [--timeout=0] [--python=PY] [--pymem=12]
#                           [--tag=] [--out=bench/results]
# --fits may also name seurat, scvi and plnmix (all:
#   --fits=svir,flexmix,mclust,kmeans,dmn,seurat,scvi,plnmix). scvi and
#   plnmix run bench/mixture_py.py with --python (default: $SVIR_BENCH_PYTHON,
#   else /tmp/venv_mix/bin/python if it exists, else python3), a Python with
#   scvi-tools, scanpy, leidenalg and pyPLNmodels. --timeout=S stops a fit
#   after S seconds (each R fit then runs in a forked child: parallel::
#   mcparallel), reported as "timeout"; --timeout=S,dmn=S2,... sets some
#   fits' own limits; 0, the default, runs the R fits in this process
#   without a limit. --pymem caps the Python process's address
#   space at that many GB (0: no cap). --tag adds -TAG to the report's name.
#
# The counts: K clusters of unequal sizes (shares proportional to 1..K),
# cluster log-means around a gene baseline with 10 raised genes per cluster,
# negative binomial (size 2), library sizes over a tenfold range, a batch
# covariate with gene effects; about 85-90% zeros at the defaults. Fits:
#   svir: svi_fit(Y ~ batch + offset(log(sf)), family = count_mixture(K),
#     nstart = 1) (negative binomial; the batch and the library sizes in
#     the model); with --Ks=6:10 also count_mixture(K = 6:10), K chosen by
#     the fit's criterion ("svir-K"; its chosen K and table of criteria
#     reported);
#   flexmix: a multivariate Poisson mixture (FLXMCmvpois, k = K; no
#     offsets or covariates in that driver);
#   mclust: Gaussian mixtures on 10 principal components of log(1 + counts
#     / size factor) (Mclust, G = K, its default covariance models);
#   kmeans: k-means on the same components (25 starts), the graph-free
#     stand-in for Seurat's PCA-based clustering;
#   dmn: DirichletMultinomial::dmn (k = K), Holmes et al.'s EM.
#   seurat: Seurat's standard pipeline on the genes x cells counts
#     (CreateSeuratObject, NormalizeData, FindVariableFeatures, ScaleData,
#     RunPCA, FindNeighbors(dims = 1:10), FindClusters at its default
#     resolution 0.8): the number of clusters is its own (reported);
#   scvi: scvi-tools' SCVI (batch_key = "batch", its defaults, CPU; its own
#     library sizes, not the simulated ones), then scanpy's neighbours and
#     Leiden (defaults) on the latent space: clusters its own (reported);
#   plnmix: pyPLNmodels' PlnMixture (n_cluster = K, log size factors as
#     offsets, the batch as a covariate);
#     scvi and plnmix: the R side writes the counts (Matrix Market), batch
#     and size factors to a temporary folder and runs bench/mixture_py.py
#     once per fit; their time is the fit's own as Python measured it
#     (from reading the data to the labels, imports excluded), the
#     process's wall time is in the notes.
#   oracle: each row's most probable cluster under the true parameters
#     (the simulation's), the best any method can do on average.
# Reported per fit: wall time, ARI against the simulated labels, the number
# of clusters in its labels, and peak memory: the R process's peak resident
# set (VmHWM after resetting it through /proc/self/clear_refs, so it
# includes R and the data) or the Python process's (ru_maxrss).
# Medians over the seeds go to stdout and <out>/mixture-<date>.md, with
# the BLAS that ran.
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args(
  paste("usage: Rscript bench/mixture.R [--lib=DIR] [--n=1000] [--p=200] [--K=5] [--seeds=2]",
        "[--fits=svir,flexmix,mclust,kmeans,dmn,seurat,scvi,plnmix] [--Ks=FROM:TO] [--timeout=S]",
        "[--python=PY] [--pymem=GB] [--tag=TAG] [--out=DIR]"),
  c(lib = "", n = "1000", p = "200", K = "5", seeds = "2", fits = "svir,flexmix,mclust,kmeans,dmn",
    Ks = "", timeout = "0", python = "", pymem = "12", tag = "", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
fits <- strsplit(a$fits, ",", fixed = TRUE)[[1]]
Ks <- if (nzchar(a$Ks)) eval(parse(text = a$Ks)) else NULL
if (!is.null(Ks)) fits <- c(fits, "svir-K")
chosen <- integer()
crit_lines <- character()
suppressPackageStartupMessages({
  library(svir)
  if ("mclust" %in% fits) library(mclust) # Mclust() looks up mclustBIC() on the search path
  if ("seurat" %in% fits) library(Seurat)
})
# all of svir's functions now: a reinstall of svir by another process
# during a long run would otherwise break its lazy-load database
invisible(eapply(asNamespace("svir"), force, all.names = TRUE))
# --timeout=S or S,fit=S2,...: each fit's limit in seconds (0: none)
tparts <- strsplit(a$timeout, ",", fixed = TRUE)[[1]]
tnamed <- grepl("=", tparts, fixed = TRUE)
timeouts <- stats::setNames(as.numeric(sub(".*=", "", tparts[tnamed])), sub("=.*", "", tparts[tnamed]))
timeout_default <- if (any(!tnamed)) as.numeric(tparts[!tnamed][1]) else 0
timeout_of <- function(m) if (m %in% names(timeouts)) timeouts[[m]] else timeout_default
python <- if (nzchar(a$python)) a$python else if (nzchar(Sys.getenv("SVIR_BENCH_PYTHON")))
  Sys.getenv("SVIR_BENCH_PYTHON") else if (file.exists("/tmp/venv_mix/bin/python")) "/tmp/venv_mix/bin/python" else "python3"
py_fits <- intersect(fits, c("scvi", "plnmix"))
n <- as.integer(a$n)
p <- as.integer(a$p)
K <- as.integer(a$K)

# adjusted_rand(), shared with the tests
source(file.path(here, "..", "tests", "testthat", "helper-sim.R"))
ari <- adjusted_rand

simulate <- function(seed) {
  set.seed(seed)
  sp <- sim_sc_params(n, p, K, base = -2.5, noise = 0.2, nup = 10)
  share <- sp$share
  z <- sp$z
  mu <- sp$mu
  sf <- sp$sf
  batch <- sp$batch
  gam <- sp$gam
  eta <- log(sf) + outer(batch == "B", gam) + mu[z, ]
  attr(eta, "gam") <- gam
  Y <- matrix(rnbinom(n * p, size = 2, mu = exp(eta)), n, dimnames = list(NULL, paste0("g", seq_len(p))))
  d <- data.frame(batch, sf)
  d$Y <- Y
  # the oracle: each row's most probable cluster under the true parameters
  ll <- vapply(seq_len(K), function(k) {
    e <- exp(log(sf) + outer(batch == "B", attr(eta, "gam")) + matrix(mu[k, ], n, p, byrow = TRUE))
    rowSums(matrix(dnbinom(Y, size = 2, mu = e, log = TRUE), n)) + log(share[k])
  }, numeric(n))
  list(d = d, z = z, oracle = max.col(ll))
}

# The process's peak resident set in MB, and its reset (Linux >= 4.0).
peak_mb <- function() {
  l <- grep("^VmHWM:", tryCatch(readLines("/proc/self/status"), error = function(e) ""), value = TRUE)
  if (length(l)) as.numeric(gsub("[^0-9]", "", l)) / 1024 else NA_real_
}
reset_peak <- function() invisible(tryCatch(writeLines("5", "/proc/self/clear_refs"), error = function(e) NULL))

# One fit, timed, with the process's peak memory; with --timeout, in a
# forked child that is killed after that many seconds. Each fit starts
# from the random-number state the simulation left, with or without
# --timeout (the child inherits it: mc.set.seed = FALSE; in this process
# the state is put back after the fit).
timed <- function(f, timeout) {
  body <- function() {
    gc()
    reset_peak()
    v <- tryCatch(f(), error = function(e) e)
    list(value = v, peak = peak_mb())
  }
  t0 <- proc.time()[["elapsed"]]
  if (timeout > 0) {
    job <- parallel::mcparallel(body(), silent = FALSE, mc.set.seed = FALSE)
    r <- parallel::mccollect(job, wait = FALSE, timeout = timeout)
    if (is.null(r)) {
      tools::pskill(job$pid, tools::SIGKILL)
      parallel::mccollect(job, wait = TRUE)
      return(list(value = simpleError(sprintf("timeout (%g s)", timeout)), peak = NA_real_,
                  time = proc.time()[["elapsed"]] - t0))
    }
    r <- r[[1]]
    if (inherits(r, "try-error")) r <- list(value = simpleError(as.character(r)), peak = NA_real_)
  } else {
    state <- get(".Random.seed", envir = globalenv())
    r <- body()
    assign(".Random.seed", state, envir = globalenv())
  }
  r$time <- proc.time()[["elapsed"]] - t0
  r
}

pcs_of <- function(Y, sf) {
  L <- log1p(Y / sf)
  L <- L[, apply(L, 2L, stats::var) > 0, drop = FALSE]
  sv <- svd(scale(L, scale = FALSE), nu = 10, nv = 0)
  sv$u %*% diag(sv$d[1:10])
}

# Seurat's standard pipeline on genes x cells; its labels, as integers
seurat_fit <- function(Y) {
  counts <- t(Y)
  colnames(counts) <- paste0("c", seq_len(ncol(counts)))
  o <- CreateSeuratObject(counts = methods::as(counts, "CsparseMatrix"))
  o <- NormalizeData(o, verbose = FALSE)
  o <- FindVariableFeatures(o, verbose = FALSE)
  o <- ScaleData(o, verbose = FALSE)
  o <- RunPCA(o, verbose = FALSE)
  o <- FindNeighbors(o, dims = 1:10, verbose = FALSE)
  o <- FindClusters(o, verbose = FALSE)
  as.integer(Idents(o))
}

# A Python fit (bench/mixture_py.py) on the files in dir: its labels, with
# its own time, peak memory and the process's wall time as attributes.
py_fit <- function(fit, dir, seed) {
  out <- file.path(dir, paste0(fit, "-result.csv"))
  unlink(out)
  t0 <- proc.time()[["elapsed"]]
  log <- suppressWarnings(system2(python, c(file.path(here, "mixture_py.py"), paste0("--dir=", dir),
                                            paste0("--fit=", fit), paste0("--K=", K), paste0("--seed=", seed),
                                            "--threads=2", paste0("--mem-gb=", a$pymem)),
                                  stdout = TRUE, stderr = TRUE,
                                  timeout = timeout_of(fit)))
  wall <- proc.time()[["elapsed"]] - t0
  if (identical(attr(log, "status"), 124L)) stop(sprintf("timeout (%g s)", timeout_of(fit)))
  if (!file.exists(out)) stop(paste(c(sprintf("%s gave no result (status %s)", fit,
                                               format(attr(log, "status"))), utils::tail(log, 5)), collapse = "\n"))
  r <- utils::read.csv(out, stringsAsFactors = FALSE)
  z <- utils::read.csv(file.path(dir, paste0(fit, "-labels.csv")))$label
  structure(z, time = r$time, peak = r$peak_mb, note = sprintf("%s; process %.0f s", r$info, wall),
            versions = r$versions)
}

rows <- list()
py_versions <- list()
started <- format(Sys.time(), "%Y-%m-%d %H:%M")
for (seed in seq_len(as.integer(a$seeds))) {
  s <- simulate(seed)
  Y <- s$d$Y
  cat(sprintf("seed %d: %d x %d, %d clusters (sizes %s), %.0f%% zeros; the oracle's ARI %.3f\n",
              seed, n, p, K, paste(tabulate(s$z, K), collapse = " "), 100 * mean(Y == 0),
              ari(s$oracle, s$z)))
  rows[[length(rows) + 1L]] <- data.frame(seed = seed, method = "oracle", time = 0,
                                          ari = ari(s$oracle, s$z), nclus = K, peak = NA_real_,
                                          note = "", error = "")
  if (length(py_fits)) {
    pydir <- tempfile("mixture-py-")
    dir.create(pydir)
    Matrix::writeMM(methods::as(Y, "CsparseMatrix"), file.path(pydir, "counts.mtx"))
    utils::write.csv(data.frame(batch = s$d$batch, sf = s$d$sf), file.path(pydir, "cells.csv"),
                     row.names = FALSE)
  }
  run <- list(
    svir = function() clusters(svi_fit(Y ~ batch + offset(log(sf)), s$d,
                                       family = count_mixture(K = K, nstart = 1), seed = seed)),
    "svir-K" = function() {
      f <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = Ks, nstart = 1),
                   seed = seed)
      structure(clusters(f), K = f$K, criteria = f$criteria)
    },
    flexmix = function() {
      f <- flexmix::flexmix(Y ~ 1, k = K, model = flexmix::FLXMCmvpois(),
                            control = list(iter.max = 200))
      flexmix::clusters(f)
    },
    mclust = function() mclust::Mclust(pcs_of(Y, s$d$sf), G = K, verbose = FALSE)$classification,
    kmeans = function() stats::kmeans(pcs_of(Y, s$d$sf), K, nstart = 25)$cluster,
    dmn = function() {
      f <- DirichletMultinomial::dmn(Y, k = K, verbose = FALSE, seed = seed)
      max.col(DirichletMultinomial::mixture(f))
    },
    seurat = function() seurat_fit(Y))
  for (m in fits) {
    r <- if (m %in% py_fits) {
      # the Python process's own time and peak memory
      v <- tryCatch(py_fit(m, pydir, seed), error = function(e) e)
      if (inherits(v, "error")) list(value = v, time = NA_real_, peak = NA_real_) else
        list(value = v, time = attr(v, "time"), peak = attr(v, "peak"))
    } else timed(run[[m]], timeout_of(m))
    ok <- !inherits(r$value, "error")
    note <- if (!ok) "" else if (!is.null(attr(r$value, "note"))) attr(r$value, "note") else ""
    if (ok && m == "svir-K") {
      chosen[seed] <- attr(r$value, "K")
      crit_lines <- c(crit_lines, sprintf("seed %d:", seed), "```",
                      utils::capture.output(print(attr(r$value, "criteria"), row.names = FALSE)), "```")
      print(attr(r$value, "criteria"), row.names = FALSE)
      note <- sprintf("K chosen %d", attr(r$value, "K"))
    }
    if (ok && m %in% py_fits) py_versions[[m]] <- attr(r$value, "versions")
    nclus <- if (ok) length(unique(as.vector(r$value))) else NA_integer_
    rows[[length(rows) + 1L]] <- data.frame(seed = seed, method = m, time = r$time,
                                            ari = if (ok) ari(as.vector(r$value), s$z) else NA_real_,
                                            nclus = nclus, peak = r$peak, note = note,
                                            error = if (ok) "" else gsub("\n", " ", conditionMessage(r$value)))
    cat(sprintf("  %-8s %7.1f s  ARI %s  clusters %s  peak %s MB %s\n", m, r$time,
                if (ok) sprintf("%.3f", ari(as.vector(r$value), s$z)) else paste("failed:", conditionMessage(r$value)),
                format(nclus), format(round(r$peak)), note))
  }
  if (length(py_fits)) unlink(pydir, recursive = TRUE)
}
res <- do.call(rbind, rows)
med <- do.call(rbind, lapply(split(res, res$method), function(r)
  data.frame(method = r$method[1], time = stats::median(r$time), ari = stats::median(r$ari),
             ari_min = min(r$ari), nclus = paste(unique(r$nclus), collapse = ", "),
             peak = suppressWarnings(max(r$peak, na.rm = TRUE)),
             failed = paste(unique(r$error[nzchar(r$error)]), collapse = "; "))))
med <- med[match(c("oracle", fits), med$method), ]
med$peak[!is.finite(med$peak)] <- NA
t_svir <- med$time[med$method == "svir"]
vers <- function(pkg) if (requireNamespace(pkg, quietly = TRUE)) as.character(utils::packageVersion(pkg)) else "absent"
cmd <- sprintf("Rscript bench/mixture.R --n=%d --p=%d --K=%d --seeds=%s --fits=%s%s%s", n, p, K, a$seeds, a$fits,
               if (nzchar(a$Ks)) paste0(" --Ks=", a$Ks) else "", if (a$timeout != "0") paste0(" --timeout=", a$timeout) else "")
lines <- c(sprintf("# Count mixtures against peers (%s)", format(Sys.Date())), "",
           sprintf("`%s`; started %s; R %s, BLAS %s; OMP_NUM_THREADS=%s; %d cores (nproc); svir %s.",
                   cmd, started, getRversion(), extSoftVersion()[["BLAS"]], Sys.getenv("OMP_NUM_THREADS", "unset"),
                   parallel::detectCores(), vers("svir")),
           sprintf("Peers: flexmix %s, mclust %s, DirichletMultinomial %s, Seurat %s.",
                   vers("flexmix"), vers("mclust"), vers("DirichletMultinomial"), vers("Seurat")),
           if (length(py_versions)) sprintf("Python (%s): %s.", python, paste(unique(unlist(py_versions)), collapse = "; ")),
           "",
           "| method | median time (s) | time / svir's | median ARI | worst ARI | clusters found | peak RSS (MB) | failed |",
           "|---|---:|---:|---:|---:|---|---:|---|",
           sprintf("| %s | %.1f | %.2f | %.3f | %.3f | %s | %s | %s |", med$method, med$time,
                   med$time / if (length(t_svir)) t_svir else NA, med$ari, med$ari_min, med$nclus,
                   ifelse(is.na(med$peak), "", sprintf("%.0f", med$peak)), med$failed), "",
           "Per seed:", "", "| seed | method | time (s) | ARI | clusters | peak RSS (MB) | notes |",
           "|---:|---|---:|---:|---:|---:|---|",
           sprintf("| %d | %s | %.1f | %.3f | %s | %s | %s |", res$seed, res$method, res$time, res$ari, format(res$nclus),
                   ifelse(is.na(res$peak), "", sprintf("%.0f", res$peak)),
                   ifelse(nzchar(res$error), paste("failed:", res$error), res$note)))
if (length(chosen)) {
  lines <- c(lines, "", sprintf("svir-K: K chosen from %s: %s (seeds %s).", a$Ks,
                                paste(chosen, collapse = ", "), paste(seq_along(chosen), collapse = ", ")),
             "", crit_lines)
}
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
path <- file.path(a$out, sprintf("mixture-%s%s.md", format(Sys.Date()), if (nzchar(a$tag)) paste0("-", a$tag) else ""))
writeLines(lines, path)
writeLines(lines)
