# TEST ONLY: aims the environment at moto_server (endpoint from AWS_ENDPOINT_URL).
provider "aws" {
  region                      = var.region
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = false
  s3_use_path_style           = true
}

provider "aws" {
  alias                       = "dr"
  region                      = var.dr_region
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = false
  s3_use_path_style           = true
}

# one of moto's built-in images (the Debian lookup has nothing to find there)
variable "ami_id" {
  default = "ami-1e749f67"
}

module "rds" {
  deletion_protection = false
  skip_final_snapshot = true
}

# moto's ReplicateKey shares state between primary and replica (the primary then reads back as
# a REPLICA) and ignores description, policy and tags: use an independent DR key here.
module "backup_buckets" {
  force_destroy    = true
  multi_region_key = false
}

# moto has no MonitorInstances: detailed monitoring makes apply hang
module "pgbouncer_hosts" {
  detailed_monitoring     = false
  nlb_deletion_protection = false
}

module "ops_host" {
  detailed_monitoring = false
}
