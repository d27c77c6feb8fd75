"""The console's pages: one router per page (fleet, node, workloads, job, endpoint, queue,
simulation) and the login. Each calls the same services as the API."""
