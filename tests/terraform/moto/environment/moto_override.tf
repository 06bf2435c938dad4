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

# Module arguments of the tier (terraform/modules/tier) that only a throwaway run wants:
# - deletion protection off (RDS, NLB), no final snapshot, non-empty buckets destroyable, so that
#   the test can destroy;
# - moto's ReplicateKey shares state between primary and replica (the primary then reads back as
#   a REPLICA) and ignores description, policy and tags: an independent DR key here;
# - moto has no MonitorInstances: EC2 detailed monitoring makes apply hang.
module "tier" {
  db_deletion_protection  = false
  db_skip_final_snapshot  = true
  backup_force_destroy    = true
  backup_multi_region_key = false
  detailed_monitoring     = false
  nlb_deletion_protection = false
}
