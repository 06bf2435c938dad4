variable "name" {
  description = "Name prefix (e.g. dbtier-production): the controller policy is <name>-ansible-ssm."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the bucket Ansible's amazon.aws.aws_ssm connection moves files through (its ansible_aws_ssm_bucket_name)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !strcontains(var.bucket_name, "..")
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens."
  }
}

variable "instance_ids" {
  description = "EC2 instances Ansible may open SSM sessions to (the controller policy names them)."
  type        = list(string)

  validation {
    condition     = alltrue([for i in var.instance_ids : can(regex("^i-[0-9a-f]+$", i))])
    error_message = "instance_ids entries must look like i-0123456789abcdef0."
  }
}

variable "object_expiration_days" {
  description = "Days after which leftover transfer objects expire (the plugin deletes them at the end of a run; an interrupted run leaves them, possibly with secrets)."
  type        = number
  default     = 1

  validation {
    condition     = var.object_expiration_days >= 1 && var.object_expiration_days <= 7
    error_message = "object_expiration_days must be between 1 and 7: transfer files are transient and may hold secrets."
  }
}

variable "force_destroy" {
  description = "Allow destroying the bucket with objects left in it (transfer files are transient)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
