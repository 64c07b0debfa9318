"""A full governance round driven by web3.py, as a GOPEN holder would run it: wrap OPEN, delegate,
propose through the Governor's JSON ABI, vote (directly and by EIP-712 signature), queue and
execute, the dev chain's clock moved with evm_increaseTime. The first proposal approves a model;
the second slashes it once deployed and staked, checked to the wei. Then the same round from the
command line. The tests run their own node, since they move its clock."""

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError

from conftest import DEV_KEYS, OPEN, base_tx, send
from test_cli import cli, cli_json
from test_modules import address, module, transact

VOTER_A, VOTER_B, CREATOR = DEV_KEYS
PPM = 1_000_000
STATES = ["Pending", "Active", "Canceled", "Defeated", "Succeeded", "Queued", "Expired", "Executed"]


def advance(w3: Web3, seconds: int):
    """Moves the chain's clock forward and seals a block `seconds` after the latest one (blocks
    sealed one per transaction can run ahead of the wall clock, so the clock alone is not enough)."""
    latest = w3.eth.get_block("latest").timestamp
    assert w3.provider.make_request("evm_increaseTime", [seconds])["result"] >= seconds
    w3.provider.make_request("evm_mine", [latest + seconds])
    assert w3.eth.get_block("latest").timestamp == latest + seconds


def fund(w3: Web3, to: str, amount: int):
    send(w3, {**base_tx(w3, VOTER_A), "to": to, "value": amount, "gas": 21_000,
              "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9}, VOTER_A)


def run_proposal(w3: Web3, actions, description: str, voters) -> list:
    """Proposes, votes For with `voters`, queues and executes; returns the receipts."""
    governor = module(w3, "IGovernor")
    targets, calldatas = zip(*actions)
    args = (list(targets), [0] * len(targets), list(calldatas))
    receipts = [transact(w3, governor.functions.propose(*args, description), VOTER_A)[0]]
    proposal = governor.events.ProposalCreated().process_receipt(receipts[0])[0].args.proposalId
    advance(w3, 2)
    for key in voters:
        receipts.append(transact(w3, governor.functions.castVote(proposal, 1), key)[0])
    advance(w3, governor.functions.votingPeriod().call() + 1)
    description_hash = Web3.keccak(text=description)
    receipts.append(transact(w3, governor.functions.queue(*args, description_hash), VOTER_B)[0])
    advance(w3, governor.functions.timelockDelay().call())
    receipts.append(transact(w3, governor.functions.execute(*args, description_hash), VOTER_B)[0])
    assert STATES[governor.functions.state(proposal).call()] == "Executed"
    return receipts


def base_fees(w3: Web3, receipts) -> int:
    """The EIP-1559 base fees the treasury collected for these transactions."""
    return sum(r.gasUsed * w3.eth.get_block(r.blockNumber).baseFeePerGas for r in receipts)


def test_a_governance_round_approves_a_model_then_slashes_it(own_w3):
    w3 = own_w3
    gopen, governor, models = module(w3, "IGOPEN"), module(w3, "IGovernor"), module(w3, "IModels")
    staking, datanets = module(w3, "IStaking"), module(w3, "IDatanets")
    assert governor.functions.CLOCK_MODE().call() == "mode=timestamp"
    for key, amount in ((VOTER_A, 1_000), (VOTER_B, 600)):
        transact(w3, gopen.functions.deposit(), key, value=amount * OPEN)
        transact(w3, gopen.functions.delegate(address(key)), key)

    # A datanet with an approved version and a model proposed on it.
    transact(w3, datanets.functions.createDatanet("Triage", "Triage notes", b"\x01" * 32, [], "text", "CC0", True),
             CREATOR)
    datanet = datanets.functions.datanetCount().call()
    transact(w3, datanets.functions.publish(datanet), CREATOR, value=datanets.functions.publishFee(datanet).call())
    receipt, _ = transact(w3, datanets.functions.contribute(datanet, b"\x02" * 32, 3, 100, "CC0"), CREATOR)
    contribution = datanets.events.Contributed().process_receipt(receipt)[0].args.contributionId
    fee = datanets.functions.versionFee(datanet, [contribution]).call()
    transact(w3, datanets.functions.approve(datanet, [contribution]), CREATOR, value=fee)
    receipt, _ = transact(w3, models.functions.proposeModel("triage-lora", "tiny", [datanet], b"\x00" * 32), CREATOR)
    model = models.events.ModelProposed().process_receipt(receipt)[0].args.modelId

    approve = models.functions.approveModel(model)._encode_transaction_data()
    targets, values, calldatas = [models.address], [0], [approve]
    description = "Approve the triage model"
    receipt, _ = transact(w3, governor.functions.propose(targets, values, calldatas, description), VOTER_A)
    created = governor.events.ProposalCreated().process_receipt(receipt)[0].args
    proposal = created.proposalId
    assert proposal == governor.functions.hashProposal(targets, values, calldatas,
                                                       Web3.keccak(text=description)).call()
    assert STATES[governor.functions.state(proposal).call()] == "Pending"
    advance(w3, 2)
    assert STATES[governor.functions.state(proposal).call()] == "Active"

    # Votes count as they stood at the snapshot: moving GOPEN afterwards changes nothing.
    stranger = Account.create()
    transact(w3, gopen.functions.transfer(stranger.address, 500 * OPEN), VOTER_A)
    receipt, _ = transact(w3, governor.functions.castVote(proposal, 1), VOTER_A)
    assert governor.events.VoteCast().process_receipt(receipt)[0].args.weight == 1_000 * OPEN
    assert gopen.functions.getVotes(address(VOTER_A)).call() == 500 * OPEN

    # Voter B votes Against by EIP-712 signature; a third party relays it.
    nonce = governor.functions.nonces(address(VOTER_B)).call()
    signed = Account.sign_typed_data(VOTER_B, {
        "name": "OpenLedger Governor", "version": "1", "chainId": w3.eth.chain_id,
        "verifyingContract": governor.address,
    }, {"Ballot": [{"name": "proposalId", "type": "uint256"}, {"name": "support", "type": "uint8"},
                   {"name": "voter", "type": "address"}, {"name": "nonce", "type": "uint256"}]},
        {"proposalId": proposal, "support": 0, "voter": address(VOTER_B), "nonce": nonce})
    transact(w3, governor.functions.castVoteBySig(proposal, 0, address(VOTER_B), signed.signature), CREATOR)
    against, for_, abstain = governor.functions.proposalVotes(proposal).call()
    assert (against, for_, abstain) == (600 * OPEN, 1_000 * OPEN, 0)

    advance(w3, governor.functions.votingPeriod().call() + 1)
    assert STATES[governor.functions.state(proposal).call()] == "Succeeded"
    description_hash = Web3.keccak(text=description)
    transact(w3, governor.functions.queue(targets, values, calldatas, description_hash), VOTER_B)
    with pytest.raises(ContractCustomError) as early:
        governor.functions.execute(targets, values, calldatas, description_hash).call()
    assert Web3.keccak(text="GovernorNotReady(uint256,uint256)")[:4].hex() in str(early.value.data)
    advance(w3, governor.functions.timelockDelay().call())
    receipt, _ = transact(w3, governor.functions.execute(targets, values, calldatas, description_hash), VOTER_B)
    approved = models.events.ModelApproved().process_receipt(receipt)[0].args
    assert approved.approver == governor.address
    assert models.functions.getModel(model).call()[2] == 2  # Approved

    # Trained, staked by its operator and a delegator, deployed.
    transact(w3, models.functions.registerArtifact(model, b"\xaa" * 32, [1], b"\x00" * 32), CREATOR)
    operator, delegator, reporter = Account.create(), Account.create(), Account.create()
    for account in (operator, delegator):
        fund(w3, account.address, 200 * OPEN)
    transact(w3, staking.functions.stakeOperator(model), operator.key, value=20 * OPEN)
    transact(w3, staking.functions.stake(model), delegator.key, value=100 * OPEN)
    transact(w3, models.functions.deploy(model, operator.address, OPEN // 1000, OPEN // 1000), CREATOR)
    assert models.functions.getModel(model).call()[2] == 4  # Deployed

    # The slash: half of the 120 OPEN staked, the operator's 20 first, then 40 of the delegator's
    # 100; the reporter gets 10%, the treasury the rest.
    held = w3.eth.get_balance(staking.address)
    treasury = module(w3, "ITreasury")
    slash = staking.functions.slash(model, 500_000, "harmful answers", reporter.address)._encode_transaction_data()
    before = w3.eth.get_balance(treasury.address)
    receipts = run_proposal(w3, [(staking.address, slash)], "Slash the triage model", [VOTER_A])
    slashed = staking.events.Slashed().get_logs(from_block=0)[0].args
    assert (slashed.fromOperator, slashed.fromDelegators) == (20 * OPEN, 40 * OPEN)
    assert (slashed.toBeneficiary, slashed.toTreasury) == (6 * OPEN, 54 * OPEN)
    assert w3.eth.get_balance(reporter.address) == 6 * OPEN
    assert w3.eth.get_balance(staking.address) == held - 60 * OPEN
    # Beside the slash, the treasury collected the base fees of the round's transactions.
    assert w3.eth.get_balance(treasury.address) - before == 54 * OPEN + base_fees(w3, receipts)
    assert models.functions.getModel(model).call()[2] == 6  # Slashed
    position = staking.functions.positionOf(model, delegator.address).call()
    assert position[0] == 60 * OPEN


def test_governance_from_the_command_line(own_node, own_w3):
    # Account 0 holds at least 1,000 GOPEN, so account 2's 200 cannot reach the 25% quorum alone.
    cli(own_node, "gov", "deposit", "1000", "--account", "0")
    cli(own_node, "gov", "deposit", "200", "--account", "2")
    proposed = cli_json(own_node, "gov", "propose", "--description", "We value open data", "--account", "2")
    proposal = proposed["proposalId"]
    advance(own_w3, 2)
    voted = cli_json(own_node, "gov", "vote", proposal, "for", "--reason", "yes", "--account", "2")
    assert int(voted["weight"]) == 200 * OPEN
    again = cli(own_node, "gov", "vote", proposal, "for", "--account", "2", check=False)
    assert again.returncode != 0 and "GovernorAlreadyCastVote" in again.stderr
    period = module(own_w3, "IGovernor").functions.votingPeriod().call()
    advance(own_w3, period + 1)
    shown = cli_json(own_node, "gov", "show", proposal)
    # 200 For out of a supply of at least 1,200 GOPEN misses the 25% quorum.
    assert shown["state"] == "Defeated" and int(shown["for"]) == 200 * OPEN
    refused = cli(own_node, "gov", "queue", proposal, "--account", "2", check=False)
    assert "GovernorUnexpectedProposalState" in refused.stderr
    listed = cli_json(own_node, "gov", "show")
    assert {"proposalId": proposal, "state": "Defeated"}.items() <= next(
        p for p in listed if p["proposalId"] == proposal).items()
    unknown = cli(own_node, "stake", "show", "999", "--account", "2", check=False)
    assert unknown.returncode != 0 and "UnknownModel" in unknown.stderr
