"""GitHub as the product sees it: a small port (:mod:`.port`) and its PyGithub adapter."""
