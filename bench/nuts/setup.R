# Shared by the NUTS reference builders (build_refs.R, build_pln_ref.R),
# sourced after .libPaths() is set: `here` (this directory), `root` (the
# repository), svir and rstan loaded, rstan pointed at Debian's Boost headers.
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench/nuts"
root <- dirname(dirname(here))
suppressPackageStartupMessages({
  library(svir)
  library(rstan)
})
if (dir.exists("/usr/include/boost")) rstan::rstan_options(boost_lib = "/usr/include")
