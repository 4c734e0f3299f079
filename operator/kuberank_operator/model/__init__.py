"""The resource and what is known about it: the spec (every default defined once), the policies
derived from it, the one parsed view per RerankerDeployment, names, and the summaries of what
the watches and scrapes see. Pure data and pure functions: no I/O."""
