variable "name" {
  description = "Host name (e.g. dbtier-production-ops)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,60}$", var.name))
    error_message = "name must be 3-61 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "ami_id" {
  description = "AMI of the host (Debian 12 recommended; the environment looks it up)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type (backups compress and encrypt: give it CPU)."
  type        = string
  default     = "t3.medium"
}

variable "subnet_id" {
  description = "Private subnet of the host."
  type        = string
}

variable "security_group_ids" {
  description = "Security groups (the network module's ops group)."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must not be empty."
  }
}

variable "instance_profile_name" {
  description = "Instance profile from the iam module."
  type        = string
}

variable "root_volume_size" {
  description = "Root volume in GiB: room for a base backup staged before upload."
  type        = number
  default     = 100

  validation {
    condition     = var.root_volume_size >= 8
    error_message = "root_volume_size must be at least 8 GiB."
  }
}

variable "ebs_kms_key_arn" {
  description = "KMS key for the root volume; null uses the account's default EBS key."
  type        = string
  default     = null
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the instance."
  type        = bool
  default     = true
}

variable "ssh_key_name" {
  description = "EC2 key pair for Ansible over SSH; null when access goes through SSM Session Manager."
  type        = string
  default     = null
}

variable "alarm_actions" {
  description = "SNS topic ARNs notified by the CloudWatch alarms (and on recovery): the tier passes its alert topic."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_actions : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", a))])
    error_message = "alarm_actions entries must be SNS topic ARNs."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
