#' Say hello
#' @param who who to greet
hello <- function(who = "fleet") {
  paste0("Hello, ", who, "!")
}
