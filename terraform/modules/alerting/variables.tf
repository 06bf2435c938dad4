variable "name" {
  description = "Name prefix (e.g. dbtier-production): the topic is <name>-alerts, its key alias/<name>-alerts."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "email_addresses" {
  description = "Email addresses subscribed to the topic (each must confirm the mail AWS sends before anything is delivered)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.email_addresses : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", a))])
    error_message = "email_addresses entries must be email addresses such as oncall@example.com."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
