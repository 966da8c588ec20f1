# SLURM defaults for `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml); edit, then
#   source experiments/slurm/env.sh
# A command-line override (hydra.launcher.partition=...) still wins over these.
export PIPNET_SLURM_PARTITION=gpu        # sbatch --partition
# export PIPNET_SLURM_ACCOUNT=mylab      # sbatch --account
# export PIPNET_SLURM_QOS=normal         # sbatch --qos
# export PIPNET_SLURM_CONSTRAINT=a100    # sbatch --constraint
export PIPNET_SLURM_GPUS_PER_NODE=1      # GPUs (= tasks) per node of each job; trainer=ddp uses all of them
export PIPNET_SLURM_CPUS_PER_TASK=8      # CPU cores per GPU (data loading)
export PIPNET_SLURM_MEM_GB=64            # memory per node
export PIPNET_SLURM_TIMEOUT_MIN=1440     # time limit of each job, minutes
export PIPNET_SLURM_MAX_REQUEUE=0        # requeues after a time-out (use with ckpt_path=last)
export WANDB_MODE=offline                # compute nodes often have no network: sync later with `wandb sync`
